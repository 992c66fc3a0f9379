"""Parameter grids: every combination (:func:`grid`) or a seeded random sample (:func:`random_grid`) of a strategy
class's parameters, as a list of strategies ready for :func:`raybt.run_backtests`.

>>> raybt.grid(SmaCross, fast=range(5, 55, 5), slow=range(20, 210, 10), where=lambda fast, slow: fast < slow)
[SmaCross(fast=5, slow=20), SmaCross(fast=5, slow=30), ...]

Values a strategy's parameters accept are scalars; numpy scalars (as ``np.arange`` yields) are converted by the
strategy itself. Parameters not named keep their class defaults.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from raybt.strategy import Strategy

Where = Callable[..., bool]


def grid(strategy_class: type[Strategy], *, where: Where | None = None, **values: Iterable[Any]) -> list[Strategy]:
    """Every combination of the given parameter values (the last parameter varies fastest), as strategies.

    Each keyword names a parameter of ``strategy_class`` and gives its values (a range, list, array, or one scalar
    for a fixed value). ``where`` keeps only the combinations it returns true for; it is called with the parameters
    it names in its signature (``lambda fast, slow: fast < slow``), so it need not accept the others. Duplicate
    combinations are kept once.

    Raises ``TypeError`` naming an unknown parameter (or one ``where`` asks for but the grid does not set) and
    ``ValueError`` for a parameter with no values, or when ``where`` rejects every combination.
    """
    _check_class(strategy_class)
    _check_names(strategy_class, values)
    axes = {name: _values(name, v) for name, v in values.items()}
    keep = _where_filter(strategy_class, where, set(axes))
    combos = (dict(zip(axes, combo)) for combo in itertools.product(*axes.values()))
    strategies = [strategy_class(**params) for params in combos if keep(params)]
    if not strategies:
        raise ValueError(f"grid of {strategy_class.__qualname__}: `where` rejected every one of the "
                         f"{np.prod([len(v) for v in axes.values()]):,} combinations")
    return list(dict.fromkeys(strategies))


def random_grid(strategy_class: type[Strategy], *, n: int, seed: int | None, where: Where | None = None,
                **distributions: Any) -> list[Strategy]:
    """``n`` distinct strategies with parameters drawn at random; the same ``seed`` gives the same list.

    Each keyword names a parameter and how to draw it:

    * a ``range``, list, tuple or array: one of its values, uniformly;
    * a frozen scipy-like distribution (anything with ``rvs(random_state=...)``), e.g. ``scipy.stats.uniform(0.01,
      0.09)``: a draw from it (integer parameters are rounded to the nearest integer);
    * a callable taking a :class:`numpy.random.Generator`, e.g. ``lambda rng: rng.lognormal(0, 1)``;
    * a scalar: that fixed value.

    Draws are made parameter by parameter in keyword order from ``numpy.random.default_rng(seed)``; duplicates and
    combinations ``where`` rejects are drawn again, up to ``100 * n`` attempts (``ValueError`` if fewer than ``n``
    distinct combinations were found — e.g. a space smaller than ``n``). ``seed=None`` is allowed but must be
    given explicitly, so a non-reproducible sample is a choice.
    """
    _check_class(strategy_class)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"random_grid: n must be a positive int, got {n!r}")
    _check_names(strategy_class, distributions)
    draws = {name: _sampler(strategy_class, name, spec) for name, spec in distributions.items()}
    keep = _where_filter(strategy_class, where, set(draws))
    rng = np.random.default_rng(seed)
    found: dict[Strategy, None] = {}
    for _ in range(100 * n):
        params = {name: draw(rng) for name, draw in draws.items()}
        if keep(params):
            found.setdefault(strategy_class(**params))
            if len(found) == n:
                return list(found)
    raise ValueError(f"random_grid of {strategy_class.__qualname__}: found only {len(found)} distinct accepted "
                     f"combinations of the {n} asked for in {100 * n} draws; widen the distributions or lower n")


def _check_class(strategy_class: Any) -> None:
    if not (isinstance(strategy_class, type) and issubclass(strategy_class, Strategy)):
        raise TypeError(f"expected a raybt.Strategy subclass, got {strategy_class!r}")


def _check_names(strategy_class: type[Strategy], given: Mapping[str, Any]) -> None:
    unknown = sorted(set(given) - set(strategy_class._param_types))
    if unknown:
        raise TypeError(f"{strategy_class.__qualname__} has no parameter(s) {unknown}; its parameters are "
                        f"{list(strategy_class._param_types)}")


def _values(name: str, values: Any) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        return [values]
    listed = list(dict.fromkeys(v.item() if isinstance(v, np.generic) else v for v in values))
    if not listed:
        raise ValueError(f"grid: parameter {name!r} has no values")
    return listed


def _sampler(strategy_class: type[Strategy], name: str, spec: Any) -> Callable[[np.random.Generator], Any]:
    if hasattr(spec, "rvs"):
        as_int = strategy_class._param_types.get(name) is int
        return lambda rng: _rounded(spec.rvs(random_state=rng), as_int)
    if callable(spec):
        return lambda rng: _scalar(spec(rng))
    if isinstance(spec, (range, Sequence, np.ndarray)) and not isinstance(spec, (str, bytes)):
        choices = _values(name, spec)
        return lambda rng: choices[int(rng.integers(len(choices)))]
    return lambda rng: spec


def _rounded(value: Any, as_int: bool) -> Any:
    value = _scalar(value)
    return int(round(value)) if as_int else value


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _where_filter(strategy_class: type[Strategy], where: Where | None, names: set[str]
                  ) -> Callable[[dict[str, Any]], bool]:
    if where is None:
        return lambda params: True
    wanted = list(inspect.signature(where).parameters)
    missing = [w for w in wanted if w not in names]
    if missing:
        raise TypeError(f"where asks for {missing}, which the grid of {strategy_class.__qualname__} does not set "
                        f"(it sets {sorted(names)})")
    return lambda params: bool(where(**{w: params[w] for w in wanted}))
