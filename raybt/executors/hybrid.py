"""The hand-over executor: a sweep asked to run on Ray (``n_workers=-1``/``N``) that would have to start a local Ray
computes in this process first, starts Ray in the background only if the work left is worth it, and hands the
remaining batches to Ray once Ray is up and its workers are warm.

Rules:

* **When.** Only when raybt would start a local Ray itself: no ``address``, no ``RAY_ADDRESS``, no initialised Ray
  (:func:`wanted`). Joining a cluster or an initialised Ray is quick, so those sweeps go to Ray from the start; so
  do sweeps with ``address="local"``, which start the local Ray at once and wait for it (what a notebook that wants
  its Ray up for later sweeps, or its workers' output, asks for).
* **Whether to start Ray.** The first batches run here and are timed; from the third batch on, Ray is started once
  the work left, at the faster pace of the last two batches, would take longer than :data:`START_RAY_ABOVE_S`
  (:func:`worth_starting`, looked at before every batch): a small sweep never starts Ray and runs as it would with
  ``n_workers=None``. Not from the first batch alone: it pays what a process pays once (kernels compiled or loaded
  from numba's cache, first indicator calls), and at its pace a sweep of a few seconds would look worth a start
  that only takes CPU from it.
* **Hand-over.** Batches run in this process one after another; before each, the executor looks whether the start
  has finished: Ray up (:func:`raybt.executors.ray_tasks.connect`) and one warm-up task per CPU done
  (:func:`raybt.executors.ray_tasks.warm_up_workers`: a fresh worker spends a second or more importing raybt and
  loading kernels, time in which the driver goes on computing). From then on every remaining batch goes to the Ray
  executor and this process only collects (on a 2-core machine a driver that kept computing too would compete with
  the two workers for the same cores). A batch is computed either here or on Ray, whole, so no row is lost or
  computed twice, and both paths run the same :func:`raybt.batch.run_batch`: the rows are identical either way.
* **Driver memory.** Once the start is asked for, the batches run here are a stop-gap of seconds, and this process
  is about to hold Ray's driver and collect every row: its indicator cache is bounded to
  :data:`CACHE_MB_WHILE_RAY_STARTS` until the sweep ends (then the bound it had is restored), and cleared at the
  hand-over (nothing here reads it any more). The bound comes one batch earlier, as soon as the slowest pace seen
  (the first batch's) says the work left is worth a start: the batch before the start decision would otherwise
  fill the cache (``RAYBT_INDICATOR_CACHE_MB``, 256 MiB by default), the driver's peak of the whole sweep.
* **A sweep done first** never waits for Ray, nor does the program after it: Ray goes on starting in its thread (a
  daemon thread) and later sweeps of the process use it, as they use a Ray started by an earlier sweep; a program
  that ends meanwhile leaves the half-started Ray to raybt's watchdog (started before ``ray.init``). A sweep while
  Ray is still starting joins that start (computing here meanwhile), never starts another Ray.
* **The end of the program after a sweep stopped by an exception while Ray starts** (Ctrl-C, a failed job) says
  so on stderr and waits for ``ray.init`` to return, at most :data:`EXIT_WAIT_S` (the workers' warm-up is skipped;
  seconds), so that Ray's own exit handler, which runs next, shuts the Ray down in order: a process that exited
  there with ``ray.init`` half done in another thread crashed about one time in five (SIGSEGV: Ray's C++ threads
  run on while the process destroys its globals). A second Ctrl-C during the wait ends the process at once, by
  SIGINT (exit code 130); the watchdog then takes the half-started Ray down.
* **Failures** of the start (e.g. :class:`raybt.executors.ray_env.LocalRayError`) are raised in the sweep when it
  would hand over; a sweep that finished first warns instead (its rows are complete). The checks that need no
  running Ray (Ray's version, the authentication mode: :func:`check_can_start`) run before anything is computed,
  whether Ray will be started or not.
* **The starting thread lives as long as its Ray**: Ray starts its GCS server and raylet with
  ``prctl(PR_SET_PDEATHSIG)``, and Linux delivers that signal when the *thread* that spawned them ends, so a
  thread that returned after ``ray.init`` would take the fresh Ray down with it (seen here: every Ray process a
  zombie two seconds later). Ray's only main-thread-only step, its SIGTERM handler, is skipped off the main
  thread (Ray logs a warning, filtered here): a SIGTERM then ends the driver without Ray's ``atexit`` shutdown,
  and raybt's watchdog takes the local Ray down.

This module does not import Ray itself; it imports ``ray_tasks`` (and so Ray) when a start is asked for, before it
registers its exit handler: exit handlers run last registered first, and Ray registers its own when imported.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import collections
import itertools
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from raybt.batch import Batch, BatchResult
from raybt.data import MarketData
from raybt.executors import ray_env
from raybt.executors.local import LocalExecutor
from raybt.indicators import cache_info, clear_cache, set_cache_limit
from raybt.plan import RunSettings

START_RAY_ABOVE_S = 10.0
"""Ray is started only for a sweep whose work left, estimated from the batches computed so far, would take this
process longer than this many seconds. A local Ray takes 4.5-7 s here to start and warm its workers (CPU it takes
from the sweep on a small machine), and 2 Ray workers run a sweep ≈ 1.4-1.8× as fast as one process: below about
twice the start time the sweep is done sooner without Ray."""

CACHE_MB_WHILE_RAY_STARTS = 64.0
"""Bound (MiB) of this process's indicator cache from the request to start Ray to the end of the sweep (a lower
bound set by the user holds): the batches run here meanwhile take a few seconds, and a large SMA grid's first
batch alone fills the default 256 MiB."""

_MB = 2**20

EXIT_WAIT_S = 60.0
"""At most this long the end of the program waits for a background start's ``ray.init`` to return (see the module
docstring): ten times a start on a loaded machine here, a bound for a start that hangs."""

_RAY_ALIVE_POLL_S = 5.0
"""How often the starting thread looks whether its Ray has been shut down (then it may end)."""


class RayStartWarning(UserWarning):
    """The local Ray that a sweep started in the background failed to start after the sweep had finished without it."""


def wanted(address: str | None) -> bool:
    """True when a sweep on Ray would have to start a local Ray itself (or one such start is under way)."""
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return False
    # ray may be half imported (by another thread): then it is not initialised either
    is_initialized = getattr(sys.modules.get("ray"), "is_initialized", None)
    return not (is_initialized is not None and is_initialized())


class RayStart:
    """A local Ray being started in a daemon thread (:func:`raybt.executors.ray_tasks.connect`); see the module
    docstring for why the thread stays alive while its Ray is up."""

    def __init__(self, data_bytes: int):
        self.error: BaseException | None = None
        self.error_reported = False
        self._finished = threading.Event()
        self._skip_warm_up = threading.Event()
        self._thread = threading.Thread(target=self._start, args=(data_bytes,), name="raybt-ray-start", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        """Ray is up with warm workers, or its start failed (``error``)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def finish_without_warm_up(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for ``ray.init`` to return; skip the workers' warm-up if it has not
        begun."""
        self._skip_warm_up.set()
        self._finished.wait(timeout)

    def _start(self, data_bytes: int) -> None:
        try:
            logging.getLogger("ray._private.worker").addFilter(_no_sigterm_handler_warning)
            from raybt.executors import ray_tasks

            ray_tasks.connect(None, data_bytes)
            if not self._skip_warm_up.is_set():
                ray_tasks.warm_up_workers()
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


def check_can_start() -> None:
    """The checks of :mod:`raybt.executors.ray_env` that need no running Ray (Ray's version, the authentication
    mode), so that a sweep that would refuse to start Ray says so before it computes anything."""
    imported = sys.modules.get("ray")  # the version the starting thread will use, if already imported
    ray_env.check_ray_version(getattr(imported, "__version__", None) or importlib.metadata.version("ray"))
    ray_env.require_token_auth()


def start_in_background(data_bytes: int) -> RayStart:
    """The start under way, else a new one."""
    global _current
    with _current_lock:
        if _current is not None and not _current.finished:
            return _current
        check_can_start()
        logging.getLogger("ray.widgets").setLevel(logging.WARNING)
        # Ray imported here, not in the starting thread: its exit handler (ray.shutdown) must be registered before
        # raybt's, which runs first. `import ray` imports tqdm.auto, which warns "IProgress not found" in a notebook
        # kernel without ipywidgets: imported under a filter (filters cannot be changed safely from another thread)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="IProgress not found")
            importlib.import_module("raybt.executors.ray_tasks")
        global _exit_handler_registered
        if not _exit_handler_registered:
            atexit.register(_finish_start_at_exit)
            _exit_handler_registered = True
        _current = RayStart(data_bytes)
        return _current


_exit_handler_registered = False


_wait_at_exit = False
"""Set by a sweep that an exception stopped while its Ray was starting (see the module docstring)."""


def _finish_start_at_exit() -> None:
    """At the end of the program, after a sweep stopped by an exception while a background start is still under
    way: say so, and wait for its ``ray.init`` to return (see the module docstring); a second Ctrl-C meanwhile ends
    the process by SIGINT, as Python ends on an uncaught KeyboardInterrupt, without running what is left of the exit
    (the process would crash in it)."""
    if not (_wait_at_exit and starting()):
        return
    print("raybt: waiting for the local Ray that is still starting, to shut it down in order (Ctrl-C again to quit "
          "at once)", file=sys.stderr, flush=True)
    try:
        _current.finish_without_warm_up(EXIT_WAIT_S)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)


def starting() -> bool:
    """A background start of Ray is under way in this process."""
    return _current is not None and not _current.finished


def worth_starting(seconds_per_job: float, jobs_left: int) -> bool:
    """Starting a local Ray pays when the work left would take this process more than :data:`START_RAY_ABOVE_S`."""
    return seconds_per_job * jobs_left > START_RAY_ABOVE_S


class HybridExecutor:
    """Runs batches in this process, starts Ray in the background once the work left is worth it
    (:func:`worth_starting`; at once if another sweep's start is under way or the batches do not count the jobs
    left), and runs every batch after the start has finished on Ray. ``ray_executor()`` builds the Ray executor
    (in this thread) at the hand-over. The checks of :func:`check_can_start` run here."""

    def __init__(self, market: MarketData, settings: RunSettings, profile: bool, n_workers: int,
                 ray_executor: Callable[[], object]):
        check_can_start()
        self._data_bytes = market.nbytes
        self._local = LocalExecutor(market, settings, profile)
        self._make_ray_executor = ray_executor
        self._start: RayStart | None = None
        self._ray = None
        self._requested = n_workers
        # the median seconds per job of each of the last two batches run here
        self._seconds_per_job: collections.deque[float] = collections.deque(maxlen=2)
        self._cache_limit: int | None = None  # the indicator cache's bound (bytes) before this sweep lowered it

    @property
    def n_workers(self) -> int:
        """The Ray executor's once it runs; until then what it will be on this machine."""
        if self._ray is not None:
            return self._ray.n_workers
        return (os.cpu_count() or 1) if self._requested == -1 else self._requested

    def run(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        """Yield each batch's result; ``batches.jobs_left`` (if it has one) counts the jobs not yet handed out."""
        pending = iter(batches)
        for batch in pending:
            jobs_left = getattr(batches, "jobs_left", None)
            if self._start is None and self._should_start(jobs_left):
                self._start = start_in_background(self._data_bytes)
                self._bound_cache()
            elif self._may_start(jobs_left):
                self._bound_cache()
            if self._ray is None and self._start is not None and self._start.finished:
                self._hand_over()
            if self._ray is not None:
                yield from self._ray.run(itertools.chain([batch], pending))
                return
            for result in self._local.run([batch]):
                if len(result.durations):
                    self._seconds_per_job.append(float(np.median(result.durations)))
                yield result

    def _should_start(self, jobs_left: int | None) -> bool:
        if jobs_left is None or starting():
            return True
        return len(self._seconds_per_job) == 2 and worth_starting(min(self._seconds_per_job), jobs_left)

    def _may_start(self, jobs_left: int | None) -> bool:
        """Whether the slowest pace seen (the first batch's, with what a process pays once) says the work left is
        worth a start: Ray may then be asked for after the next batch."""
        return jobs_left is not None and bool(self._seconds_per_job) and worth_starting(max(self._seconds_per_job),
                                                                                         jobs_left)

    def _bound_cache(self) -> None:
        """Bound the indicator cache to :data:`CACHE_MB_WHILE_RAY_STARTS`, once per sweep (later calls keep it)."""
        if self._cache_limit is not None:
            return
        self._cache_limit = cache_info().limit
        set_cache_limit(min(self._cache_limit / _MB, CACHE_MB_WHILE_RAY_STARTS))

    def _hand_over(self) -> None:
        if self._start.error is not None:
            self._start.error_reported = True
            raise self._start.error
        self._ray = self._make_ray_executor()
        clear_cache()

    def close(self) -> None:
        """Release the Ray executor's data and restore the indicator cache's bound; never waits for a Ray still
        starting. Called while an exception stops the sweep (in the sweep's ``finally``), it makes the end of the
        program wait for that start (see the module docstring)."""
        global _wait_at_exit
        if self._start is not None and not self._start.finished and sys.exc_info()[0] is not None:
            _wait_at_exit = True
        if self._cache_limit is not None:
            set_cache_limit(self._cache_limit / _MB)
        if self._ray is not None:
            self._ray.close()
        elif (self._start is not None and self._start.finished and self._start.error is not None
              and not self._start.error_reported):
            self._start.error_reported = True
            warnings.warn(f"the local Ray failed to start ({type(self._start.error).__name__}: {self._start.error}); "
                          f"this sweep ran in this process", RayStartWarning, stacklevel=3)
