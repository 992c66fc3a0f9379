"""Digests of the code a backtest result depends on: the user's strategy code and raybt's own.

A job's key (see :mod:`raybt.plan`) must change whenever its result can. Two digests cover the code:

* :func:`class_digest` — a strategy class and the user code it can run. Rules:

  - *User code* is any module that is neither raybt, nor the standard library, nor an installed package (a file
    under the interpreter's ``stdlib``/``site-packages`` folders). Installed packages are not followed: bump
    ``Strategy.version`` when an upgrade of one changes results. Code whose module is not in ``sys.modules`` (a file
    executed by hand) counts as the user's when its file lies outside those folders.
  - Starting from the class (its user base classes too), the walk follows every function and class attribute, each
    function's code, default values and closure cells, and every global name its code mentions (``co_names``, which
    also lists attribute names, so it over-reaches, never under-reaches). A user function or class it reaches is
    walked in turn; a user module it reaches (``import helpers; helpers.f()``) is walked whole.
  - The key covers, for every user module the walk touched (the modules of every user class and function reached,
    and modules reached as such), the **source file text** (comments included: editing a comment reruns, which is
    allowed), and for every object reached its **in-memory form**: functions' bytecode, constants and names, and
    values (scalars, containers, numpy arrays) by content. The source catches any edit of a file that is
    (re)imported; the in-memory form makes the key follow the code that actually runs when it differs from the file
    (a file edited but not reloaded, a notebook cell, a module attribute set at run time).
  - A script run as ``__main__`` counts like the module of the same file (the same digest whether it runs or is
    imported; editing any of its lines, the sweep's own included, reruns). A notebook's ``__main__`` has no file:
    it contributes the objects the strategy reaches, not every variable of the session.
  - ``cls.version`` (default 0) is part of the digest: bump it when results change for a reason the walk cannot
    see (a data file the strategy reads, an installed package's upgrade, a module imported with ``importlib``
    inside a function).

  Digests are computed once per class object and cached (weakly, so reloaded classes are freed): ``strategy.id``
  for a million instances costs one dictionary look-up each. :func:`refresh` recomputes the digests of the classes
  of a sweep once when it starts, because a helper module can be edited and reloaded while the class object stays
  the same. ``importlib.reload`` of the strategy's own module creates a new class object, with a digest of its own.

  One call, one version of the code: a sweep refreshes once, when it starts, and keys all its rows with that digest
  whatever is edited while it runs. A call made of several sweeps (:func:`raybt.walk_forward`) holds its classes'
  digests with :func:`fixed` for the same rule, and asks :func:`changed_in_memory` between sweeps whether the code
  that runs is still the code the digests describe: a source file edited but not (re)loaded does not change the code
  that runs (the digest read at the start stays true for it); a reload or a reassigned value does.

* :func:`raybt_digest` — raybt's own result-affecting code: the source text of every module of the package except
  :data:`RAYBT_NOT_RESULT_AFFECTING` (commands, storage, transport, this module), and the versions of the packages
  that compute with it (:data:`COMPUTING_LIBRARIES`: numpy, pandas, numba, llvmlite). It is the results version
  (:data:`raybt.plan.RESULTS_VERSION`): any edit of the engine, metrics, indicators, signal conversion, data
  alignment, the demo strategy, ... (over-included on purpose: a new module counts unless listed) makes every stored
  row stale. Strategy classes defined inside raybt are covered by this digest, not by :func:`class_digest`.

The set of user modules a class reaches, :func:`user_modules`, is also what the Ray executor ships to workers by value,
so workers run exactly the code the key was computed from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import os
import site
import sys
import sysconfig
import types
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RAYBT_NOT_RESULT_AFFECTING = (
    "__init__.py", "checkpoint.py", "_storage.py", "_keys.py", "executors/",  # store, move
    "cli.py", "code_digest.py", "resources.py",  # commands, keys
    "_progress.py", "bench.py", "plots.py", "report.py",  # show rows
    "grid.py", "windows.py", "walk_forward.py", "stages.py", "stats/",  # make strategies, ranges (keyed), read rows
    "verdict.py",  # reads rows
)
"""Paths (relative to the raybt package) left out of :func:`raybt_digest`: they print, store, transport or key rows,
make the inputs that are keyed themselves, or read finished rows, but never change a computed value. Everything
else counts, so that an upgrade of any other module makes stored rows stale."""

_RAYBT_ROOT = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------------- raybt's code

COMPUTING_LIBRARIES = ("numpy", "pandas", "numba", "llvmlite")
"""Packages whose code computes raybt's results (arrays, frames, the compiled kernels): their versions are part of
:func:`raybt_digest`, so an upgrade of one of them makes stored rows stale too (over-invalidating on purpose)."""


def raybt_digest(root: Path = _RAYBT_ROOT) -> str:
    """Hash of the source text of raybt's result-affecting modules under ``root`` (line endings normalised) and of
    the versions of :data:`COMPUTING_LIBRARIES` installed here."""
    files = sorted(p for p in root.rglob("*.py") if not _excluded(p.relative_to(root).as_posix()))
    if not any(p.name == "engine.py" for p in files):
        raise RuntimeError(f"raybt's source files are missing under {root}: the results version cannot be derived")
    digest = hashlib.sha256()
    for name in COMPUTING_LIBRARIES:
        digest.update(f"{name}=={importlib.metadata.version(name)}\0".encode())
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()[:16]


def _excluded(relative: str) -> bool:
    return any(relative == e or (e.endswith("/") and relative.startswith(e)) for e in RAYBT_NOT_RESULT_AFFECTING)


# -------------------------------------------------------------------------------------------- strategy classes

@dataclass(frozen=True)
class _ClassCode:
    digest: str
    in_memory: str  # digest of the in-memory form alone (no source text): moves only when the running code does
    modules: tuple[types.ModuleType, ...]  # the user modules the class reaches (``__main__`` included)
    specs: tuple[object, ...]  # each module's ``__spec__`` when walked: ``importlib.reload`` gives it a new one


SET_BY_PYTHON = frozenset({"__builtins__", "__file__", "__cached__", "__slotnames__"})
"""Attributes that Python sets, not the code, and that differ while the code does not: a module's ``__builtins__``
(Ray replaces ``print`` in it when it starts; the interactive prompt sets ``_``), ``__file__`` and ``__cached__``
(where the project folder is) and a class's ``__slotnames__`` (``copyreg`` caches it when an instance is first
pickled, e.g. for Ray). The walk leaves them out, so the same code has the same ids in another folder, on another
machine and after Ray started."""

_DIGESTS: weakref.WeakKeyDictionary[type, _ClassCode] = weakref.WeakKeyDictionary()
_FIXED: weakref.WeakSet[type] = weakref.WeakSet()
"""Classes whose digests :func:`refresh` leaves as they are (inside a :func:`fixed` block)."""


def class_digest(cls: type) -> str:
    """Digest of ``cls`` and the user code it reaches (computed on first use, then cached by class object)."""
    code = _DIGESTS.get(cls)
    if code is None:
        code = _DIGESTS[cls] = _walk_class(cls)
    return code.digest


def user_modules(cls: type) -> tuple[types.ModuleType, ...]:
    """The user modules ``cls`` reaches (its own, its user base classes', and those its code uses)."""
    class_digest(cls)
    return _DIGESTS[cls].modules


def refresh(classes: Iterable[type]) -> None:
    """Recompute the digests of ``classes``: user code they call may have been edited or reloaded since. An unchanged
    digest keeps its string object, so the ids cached by instances (checked by identity) stay valid. Classes held by
    a :func:`fixed` block keep their digests."""
    for cls in set(classes) - set(_FIXED):
        old, new = _DIGESTS.get(cls), _walk_class(cls)
        _DIGESTS[cls] = new if old is None or old.digest != new.digest else dataclasses.replace(new, digest=old.digest)


@contextlib.contextmanager
def fixed(classes: Iterable[type]) -> Iterator[None]:
    """Refresh the digests of ``classes`` once, then hold them for the block: the sweeps run inside it do not
    refresh them, so all their rows are keyed with the code as it was when the block started, even if a source file
    is edited meanwhile. The caller checks :func:`changed_in_memory` between sweeps and stops if the code that runs
    changed. A class already held by an enclosing block is left to it."""
    added = [cls for cls in dict.fromkeys(classes) if cls not in _FIXED]
    refresh(added)
    _FIXED.update(added)
    try:
        yield
    finally:
        for cls in added:
            _FIXED.discard(cls)


def changed_in_memory(classes: Iterable[type]) -> list[type]:
    """Those of ``classes`` whose code in memory is no longer what their current digest was computed from: the
    in-memory form the walk reads (bytecode, values, the functions, classes and modules reached) differs, or a module
    reached was reloaded (``importlib.reload`` replaces its ``__spec__``; that also catches code the walk cannot read,
    e.g. a compiled helper). A source file edited but not (re)loaded does not count: the code that runs is the same."""
    changed = []
    for cls in dict.fromkeys(classes):
        class_digest(cls)
        old, new = _DIGESTS[cls], _walk_class(cls)
        reloaded = any(getattr(module, "__spec__", None) is not spec for module, spec in zip(old.modules, old.specs))
        if old.in_memory != new.in_memory or reloaded:
            changed.append(cls)
    return changed


def _walk_class(cls: type) -> _ClassCode:
    walk = _Walk()
    walk.visit(cls)
    parts = [_name(cls), f"version={walk.token(getattr(cls, 'version', 0))}", *walk.tokens]
    in_memory = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    modules = sorted(walk.modules.values(), key=_label)
    parts.extend(f"module {_label(module)}:\n{_source(module)}" for module in modules)
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return _ClassCode(digest, in_memory, tuple(modules), tuple(getattr(m, "__spec__", None) for m in modules))


class _Walk:
    """Collects tokens for everything a class can run, and the user modules it touches. Breadth first, with a queue
    rather than recursion, so long chains of helpers cannot exhaust the stack."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.modules: dict[str, types.ModuleType] = {}
        self._seen: dict[int, object] = {}  # id -> object (kept alive so ids stay unique during the walk)
        self._queue: deque[object] = deque()
        self._open: set[int] = set()  # ids of the containers being tokenised (a container holding itself)

    def visit(self, value: object) -> None:
        """Walk ``value`` and everything it reaches."""
        self._enqueue(value)
        while self._queue:
            self._visit_one(self._queue.popleft())

    def _enqueue(self, value: object) -> None:
        if id(value) not in self._seen:
            self._seen[id(value)] = value
            self._queue.append(value)

    def _visit_one(self, value: object) -> None:
        """Record a function, class or module of user code; other values are tokens only."""
        if isinstance(value, types.ModuleType):
            if is_user_module(value) and value.__name__ != "__main__":  # not a notebook's every variable
                self.modules[value.__name__] = value
                for name, item in sorted(vars(value).items()):
                    if _defined_in(item, value.__name__) or _is_plain_value(item):
                        self._attribute(f"{_label(value)}.{name}", name, item)
            return
        if not isinstance(value, (type, types.FunctionType)):
            return
        module = sys.modules.get(getattr(value, "__module__", None) or "")
        if module is None:  # not (or no longer) imported, e.g. executed from a file by hand: judged by its code's file
            if not _is_user_code(value):
                return
        elif is_user_module(module):
            self.modules[module.__name__] = module
        else:
            return
        if isinstance(value, type):
            self._visit_class(value)
        elif isinstance(value, types.FunctionType):
            self._visit_function(value)

    def _visit_class(self, cls: type) -> None:
        self.tokens.append(f"class {_name(cls)}({', '.join(map(_name, cls.__bases__))})")
        for base in cls.__bases__:
            self._enqueue(base)
        for name, item in cls.__dict__.items():
            if name in ("__dict__", "__weakref__", "__module__", "__doc__", "_param_types", "_param_defaults"):
                continue
            self._attribute(f"{cls.__qualname__}.{name}", name, item)

    def _attribute(self, label: str, name: str, value: object) -> None:
        if name not in SET_BY_PYTHON:
            self.tokens.append(f"{label} = {self.token(value)}")

    def _visit_function(self, func: types.FunctionType) -> None:
        self.tokens.append(f"def {_name(func)}: {_code_token(func.__code__)}")
        self.tokens.append(f"  defaults {self.token(func.__defaults__)} {self.token(func.__kwdefaults__)}")
        for cell in func.__closure__ or ():
            try:
                self.tokens.append(f"  cell {self.token(cell.cell_contents)}")
            except ValueError:  # an empty cell
                self.tokens.append("  cell <empty>")
        for name in _global_names(func.__code__):
            if name in func.__globals__:
                self.tokens.append(f"  global {name} = {self.token(func.__globals__[name])}")

    def token(self, value: object) -> str:
        """A deterministic text for ``value`` (the same in every process for the same content); functions, classes
        and modules are named here and walked later."""
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return repr(value)
        if isinstance(value, (staticmethod, classmethod)):
            return f"{type(value).__name__}({self.token(value.__func__)})"
        if isinstance(value, property):
            return f"property({self.token(value.fget)}, {self.token(value.fset)}, {self.token(value.fdel)})"
        if isinstance(value, functools.partial):
            return f"partial({self.token(value.func)}, {self.token(value.args)}, {self.token(value.keywords)})"
        if isinstance(value, (types.FunctionType, type, types.ModuleType)):
            self._enqueue(value)
            return f"<{_name(value)}>"
        if isinstance(value, (tuple, list, set, frozenset, dict)):
            if id(value) in self._open:
                return "<cycle>"
            self._open.add(id(value))
            try:
                return self._container_token(value)
            finally:
                self._open.discard(id(value))
        if isinstance(value, np.ndarray) and value.dtype != object:
            content = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
            return f"ndarray({value.dtype.str}, {value.shape}, {content})"
        if isinstance(value, np.generic):
            return repr(value)
        wrapped = getattr(value, "__wrapped__", None)  # functools.lru_cache, functools.wraps decorators
        if isinstance(wrapped, types.FunctionType):
            return f"{type(value).__name__}({self.token(wrapped)})"
        self._enqueue(type(value))  # an instance of a user class: its class's code counts
        return f"<{_name(type(value))} instance>"

    def _container_token(self, value: tuple | list | set | frozenset | dict) -> str:
        if isinstance(value, dict):
            items = sorted(f"{self.token(k)}: {self.token(v)}" for k, v in value.items())
            return f"dict({', '.join(items)})"
        tokens = [self.token(v) for v in value]
        if isinstance(value, (set, frozenset)):
            tokens.sort()  # iteration order depends on the hash seed
        return f"{type(value).__name__}({', '.join(tokens)})"


def _code_token(code: types.CodeType) -> str:
    """Bytecode, constants (nested code objects recursively) and names of ``code``; not line numbers."""
    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            consts.append(f"<{_code_token(const)}>")
        elif isinstance(const, frozenset):  # set literals: sort, their iteration order depends on the hash seed
            consts.append(f"frozenset({sorted(map(repr, const))})")
        else:
            consts.append(repr(const))
    return f"{code.co_code.hex()} {consts} {code.co_names} {code.co_varnames} {code.co_freevars}"


def _global_names(code: types.CodeType) -> list[str]:
    names = dict.fromkeys(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(dict.fromkeys(_global_names(const)))
    return list(names)


def _is_user_code(value: type | types.FunctionType) -> bool:
    """Whether the code of a function, or of a class's first method, comes from a file outside installed packages."""
    functions = [value] if isinstance(value, types.FunctionType) else [
        v for v in vars(value).values() if isinstance(v, types.FunctionType)]
    return bool(functions) and _is_user_file(functions[0].__code__.co_filename)


def _defined_in(value: object, module_name: str) -> bool:
    return isinstance(value, (type, types.FunctionType)) and getattr(value, "__module__", None) == module_name


def _is_plain_value(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float, complex, str, bytes, tuple, list, set, frozenset,
                                               dict, np.ndarray, np.generic))


def _name(value: object) -> str:
    if isinstance(value, types.ModuleType):
        return _label(value)
    module = getattr(value, "__module__", None) or "?"
    if module == "__main__" and module in sys.modules:
        module = _label(sys.modules[module])
    return f"{module}.{getattr(value, '__qualname__', '?')}"


def _label(module: types.ModuleType) -> str:
    """A module's name as it would be imported: a script run as ``__main__`` is labelled like the module of the same
    file (``python sweeps.py`` → ``sweeps``, ``python -m pkg.mod`` → ``pkg.mod``), so a class has the same digest
    whether the file runs as a script or is imported."""
    if module.__name__ != "__main__":
        return module.__name__
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    file = getattr(module, "__file__", None)
    return Path(file).stem if file else "__main__"


def _source(module: types.ModuleType) -> str:
    """The text of a module's source file ("" when it has none, e.g. an extension module)."""
    file = getattr(module, "__file__", None)
    if file and file.endswith(".py") and os.path.isfile(file):
        return Path(file).read_bytes().replace(b"\r\n", b"\n").decode("utf-8", "replace")
    loader = getattr(getattr(module, "__spec__", None), "loader", None)
    if loader is None:
        return ""
    try:
        return loader.get_source(module.__name__) or ""
    except (ImportError, OSError, AttributeError):
        return ""


def is_user_module(module: types.ModuleType) -> bool:
    """Whether ``module`` is the user's own code: ``__main__``, or a module with a file outside the standard library
    and installed packages, and not raybt."""
    name = module.__name__
    if name == "__main__":
        return True
    if name == "raybt" or name.startswith("raybt."):
        return False
    file = getattr(module, "__file__", None)
    if not file:
        return False  # built in, frozen or a namespace package: nothing of the user's to read
    return _is_user_file(file)


@functools.lru_cache(maxsize=4096)
def _is_user_file(file: str) -> bool:
    path = os.path.realpath(file)
    return not any(path.startswith(root) for root in _installed_roots())


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    """Folders of the standard library and of installed packages (each ending with a separator)."""
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    paths.add(site.getusersitepackages())
    return tuple(sorted(os.path.join(os.path.realpath(p), "") for p in paths if p))
