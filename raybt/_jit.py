"""numba compilation with an on-disk cache that never serves machine code compiled from other sources.

numba's cache (``cache=True``) invalidates a compiled function when its own source file changes, not when a file
whose functions or constants it compiled in does (numba's documented limitation): the simulation kernel takes in the
metrics scan, the metrics take in the trade record layout and the accelerations, and so on across raybt's compiled
modules. So every function compiled through :func:`jit` (and the kernel variants :mod:`raybt.engine` compiles) is
named with :data:`DIGEST`, a digest of all of :data:`COMPILED_SOURCES` and of the acceleration mode
(:mod:`raybt._accel`): an edit of any of them, or a switch to the portable twins, gives new names, hence new cache
entries, instead of a stale cached copy. Old entries stay behind in ``__pycache__``, unused.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from numba import njit

from raybt import _accel

_ROOT = Path(__file__).parent
_COMPILED_PATTERNS = ("engine.py", "_kernel/*.py", "metrics/*.py", "indicators/*.py", "_accel/*.py", "_records.py",
                      "_jit.py")

COMPILED_SOURCES: tuple[str, ...] = tuple(sorted(str(path) for pattern in _COMPILED_PATTERNS
                                                 for path in _ROOT.glob(pattern)))
"""Every file of raybt whose code or constants numba compiles into raybt's kernels."""


def sources_digest(paths: tuple[str, ...], mode: str) -> str:
    """A short hex digest of the contents of the files at ``paths`` (in that order) and of ``mode``."""
    digest = hashlib.sha1(mode.encode())
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


DIGEST = sources_digest(COMPILED_SOURCES, _accel.MODE)
"""The suffix of the names of raybt's compiled functions (see the module docstring)."""


def jit(*signature: Any, **options: Any) -> Callable[[Callable], Any]:
    """``numba.njit(*signature, cache=True, **options)`` for a function renamed with :data:`DIGEST`."""

    def compile_cached(func: Callable) -> Any:
        func.__qualname__ = f"{func.__qualname__}_{DIGEST}"
        return njit(*signature, cache=True, **options)(func)

    return compile_cached


def jit_on_first_call(*signature: Any, **options: Any) -> Callable[[Callable], Callable]:
    """:func:`jit` for a declared ``signature``, compiled (or loaded from numba's cache) at the function's first call
    instead of when its module is imported, so importing raybt compiles nothing a sweep does not call (a cold cache
    otherwise compiles every indicator kernel on the first import). Arguments convert to the declared types as they
    do for an eagerly compiled function. For functions called from Python: a compiled caller needs the numba
    dispatcher itself."""

    def wrap(func: Callable) -> Callable:
        compiled: list[Any] = []
        lock = threading.Lock()

        @functools.wraps(func)
        def call(*args: Any) -> Any:
            if not compiled:
                with lock:  # one compilation when threads call it first at once
                    if not compiled:
                        compiled.append(jit(*signature, **options)(func))
            return compiled[0](*args)

        return call

    return wrap
