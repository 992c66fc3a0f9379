"""The hand-over executor: a sweep asked to run on Ray (``n_workers=-1``/``N``) that would have to start a local Ray
first computes in this process while Ray starts in the background, then hands the remaining batches to Ray.

Rules:

* **When.** Only when raybt would start a local Ray itself: no ``address``, no ``RAY_ADDRESS``, no initialised Ray
  (:func:`wanted`). Joining a cluster or an initialised Ray is quick, so those sweeps go to Ray from the start.
* **Hand-over.** Batches run in this process one after another; before each, the executor looks whether Ray is up.
  Once it is, every remaining batch goes to the Ray executor and this process only collects (on a 2-core machine a
  driver that kept computing as well would compete with the two workers for the same cores). A batch is computed
  either here or on Ray, whole, so no row is lost or computed twice, and both paths run the same
  :func:`raybt.batch.run_batch`: the rows are identical either way.
* **A sweep done first** never waits for Ray: Ray goes on starting in its thread (a daemon thread: it does not hold
  up the end of the program) and later sweeps of the process use it, as they use a Ray started by an earlier sweep.
  A second sweep while Ray is still starting waits for the same start, never starts another Ray.
* **Failures** of the start (e.g. :class:`raybt.executors.ray_env.LocalRayError`) are raised in the sweep when it
  would hand over; a sweep that finished first warns instead (its rows are complete). The checks that need no
  running Ray (Ray's version, the authentication mode) run before anything is computed.
* **The starting thread lives as long as its Ray**: Ray starts its GCS server and raylet with
  ``prctl(PR_SET_PDEATHSIG)``, and Linux delivers that signal when the *thread* that spawned them ends, so a
  thread that returned after ``ray.init`` would take the fresh Ray down with it (seen here: every Ray process a
  zombie two seconds later). Ray's only main-thread-only step, its SIGTERM handler, is skipped off the main
  thread (Ray logs a warning, filtered here): a SIGTERM then ends the driver without Ray's ``atexit`` shutdown,
  and raybt's watchdog takes the local Ray down.

This module does not import Ray (``ray_tasks`` does, in the starting thread).
"""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator

from raybt.batch import Batch, BatchResult
from raybt.data import MarketData
from raybt.executors import ray_env
from raybt.executors.local import LocalExecutor
from raybt.plan import RunSettings

_RAY_ALIVE_POLL_S = 5.0
"""How often the starting thread looks whether its Ray has been shut down (then it may end)."""


class RayStartWarning(UserWarning):
    """The local Ray that a sweep started in the background failed to start after the sweep had finished without it."""


def wanted(address: str | None) -> bool:
    """True when a sweep on Ray would have to start a local Ray itself (or one such start is under way)."""
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return False
    # ray may be half imported (by the thread starting it): then it is not initialised either
    is_initialized = getattr(sys.modules.get("ray"), "is_initialized", None)
    return not (is_initialized is not None and is_initialized())


class RayStart:
    """A local Ray being started in a daemon thread (:func:`raybt.executors.ray_tasks.connect`); see the module
    docstring for why the thread stays alive while its Ray is up."""

    def __init__(self, data_bytes: int):
        self.error: BaseException | None = None
        self.error_reported = False
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._start, args=(data_bytes,), name="raybt-ray-start", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        """Ray is up, or its start failed (``error``)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def _start(self, data_bytes: int) -> None:
        try:
            logging.getLogger("ray._private.worker").addFilter(_no_sigterm_handler_warning)
            from raybt.executors import ray_tasks

            ray_tasks.connect(None, data_bytes)
        except BaseException as exc:  # noqa: BLE001 - handed to the sweep, which raises or warns
            self.error = exc
        finally:
            self._finished.set()
        if self.error is None:
            import ray

            while ray.is_initialized():
                threading.Event().wait(_RAY_ALIVE_POLL_S)


def _no_sigterm_handler_warning(record: logging.LogRecord) -> bool:
    return "SIGTERM handler is not set" not in record.getMessage()


_current: RayStart | None = None
_current_lock = threading.Lock()


def start_in_background(data_bytes: int) -> RayStart:
    """The start under way, else a new one after the pre-flight checks of
    :mod:`raybt.executors.ray_env` (raised here, before the sweep computes anything)."""
    global _current
    with _current_lock:
        if _current is not None and not _current.finished:
            return _current
        ray_env.check_ray_version(importlib.metadata.version("ray"))
        ray_env.require_token_auth()
        # `import ray` imports tqdm.auto, which warns "IProgress not found" in a notebook kernel without ipywidgets;
        # imported here under a filter, since warning filters cannot be changed safely from the starting thread
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="IProgress not found")
            import tqdm.auto  # noqa: F401 - imported for its side effect only
        logging.getLogger("ray.widgets").setLevel(logging.WARNING)
        _current = RayStart(data_bytes)
        return _current


class HybridExecutor:
    """Runs batches in this process until the background start of Ray is finished, then on Ray (module docstring).
    ``ray_executor()`` builds the Ray executor once Ray is up (in this thread)."""

    def __init__(self, market: MarketData, settings: RunSettings, profile: bool, n_workers: int,
                 ray_executor: Callable[[], object]):
        self._start = start_in_background(market.nbytes)
        self._local = LocalExecutor(market, settings, profile)
        self._make_ray_executor = ray_executor
        self._ray = None
        self._requested = n_workers

    @property
    def n_workers(self) -> int:
        """The Ray executor's once it runs; until then what it will be on this machine."""
        if self._ray is not None:
            return self._ray.n_workers
        return (os.cpu_count() or 1) if self._requested == -1 else self._requested

    @property
    def on_ray(self) -> bool:
        """Batches go to Ray now."""
        return self._ray is not None

    def run(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        pending = iter(batches)
        for batch in pending:
            if self._ray is None and self._start.finished:
                self._hand_over()
            if self._ray is not None:
                yield from self._ray.run(itertools.chain([batch], pending))
                return
            yield from self._local.run([batch])

    def _hand_over(self) -> None:
        if self._start.error is not None:
            self._start.error_reported = True
            raise self._start.error
        self._ray = self._make_ray_executor()

    def close(self) -> None:
        """Release the Ray executor's data; never waits for a Ray still starting."""
        if self._ray is not None:
            self._ray.close()
        elif self._start.finished and self._start.error is not None and not self._start.error_reported:
            self._start.error_reported = True
            warnings.warn(f"the local Ray failed to start ({type(self._start.error).__name__}: {self._start.error}); "
                          f"this sweep ran in this process", RayStartWarning, stacklevel=3)
