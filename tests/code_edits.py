"""A user's strategy code on disk, and the edits the stale-result tests make to it (shared by tests/test_keys.py and
tests/test_live_workers.py).

``strat_mod.py`` defines ``Edited``, which calls a helper of its own module (``lookback``), a helper of another module
of the user's (``helpers_mod.band``), reads a module-level constant (``THRESHOLD``) and a data file raybt cannot see
(``factor.txt``; its ``version`` is bumped with it). Every edit changes the results.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import textwrap
from pathlib import Path

import raybt

STRATEGY_MODULE = textwrap.dedent('''
    from pathlib import Path

    import raybt
    from helpers_mod import band

    THRESHOLD = 1.0
    FACTOR_FILE = Path(__file__).with_name("factor.txt")


    def lookback(n):
        return n


    class Edited(raybt.Strategy):
        version = 1
        n: int = 10

        def signals(self, data):
            factor = float(FACTOR_FILE.read_text())
            average = raybt.indicators.sma(data.close, lookback(self.n))
            return data.close > average * THRESHOLD * band() * factor, data.close < average
''')
HELPERS_MODULE = textwrap.dedent('''
    def band():
        return 1.0
''')
MODULES = ("strat_mod", "helpers_mod")

EDITS: dict[str, list[tuple[str, str, str]]] = {
    "helper in the same module": [("strat_mod.py", "    return n\n", "    return n + 7\n")],
    "helper in another module": [("helpers_mod.py", "return 1.0", "return 1.004")],
    "module-level constant": [("strat_mod.py", "THRESHOLD = 1.0", "THRESHOLD = 0.996")],
    "version bump with a data file": [("factor.txt", "1.0", "1.004"), ("strat_mod.py", "version = 1", "version = 2")],
}
"""Case → (file, old text, new text) replacements."""

DATA = raybt.synthetic_ohlcv(["BTC"], "2023-01-01", "2023-03-01", "1h", seed=3)
RANGES = [raybt.DateRange("2023-01-01", "2023-02-01", name="jan"), raybt.DateRange("2023-02-01", None, name="feb")]
N_VALUES = (5, 10, 20)


def write_code(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "strat_mod.py").write_text(STRATEGY_MODULE)
    (folder / "helpers_mod.py").write_text(HELPERS_MODULE)
    (folder / "factor.txt").write_text("1.0")
    return folder


def apply_edit(folder: Path, case: str) -> None:
    for name, old, new in EDITS[case]:
        path = folder / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new))


def sweep(module, **options):
    """The sweep of ``module.Edited`` every test runs (in-process unless told otherwise)."""
    strategies = [module.Edited(n=n) for n in N_VALUES]
    return raybt.run_backtests(strategies, DATA, RANGES, fees=0.001, show_progress=False, batch_size=2, **options)


def import_fresh(folder: Path):
    """Import ``strat_mod`` from ``folder`` (forgetting any earlier one of that name)."""
    forget()
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return importlib.import_module("strat_mod")


def reload_all():
    """What a notebook user does after editing: reload the helpers, then the strategy module."""
    importlib.invalidate_caches()
    importlib.reload(sys.modules["helpers_mod"])
    return importlib.reload(sys.modules["strat_mod"])


def forget() -> None:
    for name in MODULES:
        sys.modules.pop(name, None)


def copy_raybt(target: Path) -> Path:
    """A copy of the installed raybt package under ``target`` (file times kept, so numba's caches stay valid)."""
    source = Path(raybt.__file__).parent
    shutil.copytree(source, target / "raybt", copy_function=shutil.copy2)
    return target / "raybt"


ENGINE_EDIT = ("backtest.py", "size=float(strategy.size), direction=", "size=float(strategy.size) * 0.5, direction=")
"""A result-changing edit of raybt's own code: every entry invests half as much."""


def main(argv: list[str]) -> None:
    """``python -m code_edits OPTIONS_JSON OUT`` in the code folder: a fresh process runs the sweep against
    ``./checkpoints`` (with the run_backtests options given) and without a checkpoint, and writes both results."""
    import json

    import strat_mod

    stored = sweep(strat_mod, checkpoint_dir="checkpoints", **json.loads(argv[0]))
    fresh = sweep(strat_mod)
    stored.df.to_parquet(f"{argv[1]}-stored.parquet")
    fresh.df.to_parquet(f"{argv[1]}-fresh.parquet")
    print(json.dumps({"computed": stored.n_computed, "skipped": stored.n_skipped}))


if __name__ == "__main__":
    main(sys.argv[1:])
