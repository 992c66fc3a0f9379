"""The simulation kernel's per-symbol position state and how its helpers are compiled (see :mod:`raybt.engine`)."""

from __future__ import annotations

from raybt._accel import NO_REFCOUNT
from raybt._jit import jit


# Nothing in the kernel allocates (the caller passes every array in), so it is compiled without numba's reference
# counting where that is available (raybt._accel.NO_REFCOUNT): with it, each call increfs and decrefs every array
# argument (atomic operations behind calls), inlined helpers' array aliases too. The caller holds the arrays
# meanwhile. Helpers are inlined into the bar loop at numba's level (faster per backtest, measured in pairs: see
# benchmarks/bench_kernel.py).
_helper = jit(inline="always", **NO_REFCOUNT)

_DUST = 1e-9  # orders investing less than this fraction of equity are skipped (rounding residue)

_LONG_ONLY, _SHORT_ONLY, _BOTH = 0, 1, 2  # direction codes (raybt.engine.DIRECTION_CODES)

_N_SYMBOLS = 0  # 0 = read the symbol count from the arrays; raybt.engine freezes a positive one into a variant

# Per-symbol position state: rows of one float64 array (one array argument per helper call keeps calls cheap).
# _ORDER holds the side (+1 / -1) of an entry decided in a bar's exit pass and filled in its entry pass (0 = none).
_UNITS, _SIDE, _ENTRY, _ENTRY_BAR, _COMMITTED, _ENTRY_FEES, _EXTREME, _STOPS_FROM, _ORDER = range(9)
_N_STATE = 9
