"""The simulation kernel's per-symbol position state and how its helpers are compiled (see :mod:`raybt.engine`)."""

from __future__ import annotations

from typing import NamedTuple

from raybt._accel import NO_REFCOUNT
from raybt._jit import jit

# Nothing in the kernel allocates (the caller passes every array in), so it is compiled without numba's reference
# counting where that is available (raybt._accel.NO_REFCOUNT): with it, each call increfs and decrefs every array
# argument (atomic operations behind calls), inlined helpers' array aliases too. The caller holds the arrays
# meanwhile. Helpers are inlined into the bar loop at numba's level (faster per backtest: see the README's
# "Hot path" figures).
_helper = jit(inline="always", **NO_REFCOUNT)

_DUST = 1e-9  # orders investing less than this fraction of equity are skipped (rounding residue)

_LONG_ONLY, _SHORT_ONLY, _BOTH = 0, 1, 2  # direction codes (raybt.engine.DIRECTION_CODES)

_N_SYMBOLS = 0  # 0 = read the symbol count from the arrays; raybt.engine freezes a positive one into a variant


class PositionRows(NamedTuple):
    """Rows of the kernel's per-symbol position state, a float64 array ``(len(POS), n_symbols)`` (one array
    argument per helper call keeps calls cheap): ``state[POS.units, s]`` is symbol ``s``'s units. numba folds
    the row numbers in as constants."""

    units: int = 0
    """Units held (0 when flat), always positive."""
    side: int = 1
    """+1 long, -1 short."""
    entry: int = 2
    """Entry fill price (after slippage), quote currency per unit."""
    entry_bar: int = 3
    """Simulated bar of the entry fill."""
    committed: int = 4
    """Cash paid for the position: value and entry fees (quote currency)."""
    entry_fees: int = 5
    """Proportional and fixed fees paid on entry (quote currency)."""
    extreme: int = 6
    """Best price since entry for the trailing stop: highest high of a long, lowest low of a short."""
    stops_from: int = 7
    """First simulated bar on which the stops are checked."""
    order: int = 8
    """Side (+1 / -1) of an entry decided in a bar's exit pass and filled in its entry pass (0 = none)."""


POS = PositionRows()
