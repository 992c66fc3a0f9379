"""Every acceleration of raybt that depends on something other than numba's and numpy's public behaviour.

Each has a plain twin that gives bit-identical results, and one environment switch makes raybt use the twins:
``RAYBT_PORTABLE=1`` (read once, when raybt is imported). Use it where an acceleration does not build or behave
(another CPU, LLVM, pandas or kernel), to check a suspected acceleration bug, or to read the plain version of the
code. The accelerations (the twins are next to them):

* :mod:`raybt._accel.llvm`: hand-written LLVM intrinsics (the signal scan's 32-lane mask and lowest set bit, the
  metrics' vector compress stores and float bit casts, the SMA's division by a fused multiply-add);
* :data:`NO_REFCOUNT`: numba's private ``_nrt=False`` option for kernels that allocate nothing (calls skip the
  reference counting of every array argument);
* :mod:`raybt._accel.frames`: DataFrames built and checked through pandas' block manager (pandas internals);
* :mod:`raybt._accel.slabs`: indicator outputs carved from memory advised to use transparent huge pages.
* :mod:`raybt._accel.malloc`: glibc's malloc told to keep large freed blocks for reuse in processes that evaluate
  batches (no fresh, zero-filled pages for every chunk's signals).
* :mod:`raybt._accel.collector`: Python's cyclic garbage collector paused while a worker rebuilds a batch's
  strategies (no full collection of the worker's heap triggered by that burst of objects).

numba caches compiled code on disk; the mode is part of the names of raybt's compiled functions
(:mod:`raybt._jit`), so the fast and the portable variants never share or overwrite cache entries.
"""

from __future__ import annotations

import os


def _portable_from_env() -> bool:
    """``RAYBT_PORTABLE``: "1" for the twins; unset, empty or "0" for the accelerations; anything else is an error
    (a value such as "true" or "yes" would otherwise leave the accelerations on unnoticed)."""
    value = os.environ.get("RAYBT_PORTABLE", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"RAYBT_PORTABLE must be 1 (use the portable twins) or 0/unset, got {value!r}")
    return value == "1"


PORTABLE: bool = _portable_from_env()
"""Whether raybt uses the plain twins (``RAYBT_PORTABLE=1`` when raybt was imported)."""

MODE = "portable" if PORTABLE else "fast"
"""``"portable"`` or ``"fast"``: part of the names of compiled functions (see the module docstring)."""

NO_REFCOUNT: dict[str, bool] = {} if PORTABLE else {"_nrt": False}
"""numba options for a compiled function that allocates nothing: without reference counting (numba's private
``_nrt`` option) unless portable. The caller holds every array argument for the duration of the call."""
