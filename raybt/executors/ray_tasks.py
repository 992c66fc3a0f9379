"""The Ray executor: batches of jobs as Ray remote tasks over market data put once into the object store.

* **Connecting.** ``address`` joins an existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``). Without
  it, an already initialised Ray (a notebook, ``ray job submit``) or ``RAY_ADDRESS`` is used; otherwise a new local
  Ray starts (never silently joining a ``ray start`` cluster that happens to run on the machine) with small-machine
  defaults: no dashboard, an explicit object store size, every server bound to 127.0.0.1 and token authentication
  (see :mod:`raybt.executors.ray_env`); ``address="local"`` asks for that local Ray even where ``RAY_ADDRESS`` is set.
  A Ray started here is left running for later sweeps in the same process.
* **Data.** ``ray.put(market)`` once; every task receives the ObjectRef as a top-level argument, which Ray resolves to
  a zero-copy, read-only view of the arrays.
* **Flow control.** At most ``window`` tasks are in flight (``ray.wait``), so driver memory stays flat however many
  jobs there are; results are yielded in completion order.
* **Strategy code.** User modules the strategy classes reach (not installed packages, not raybt) are pickled by value
  (:func:`ship_user_modules`): a long-lived worker never runs a version of them it imported earlier, and workers
  need not be able to import them (a cluster, a notebook, later ``sys.path`` tweaks). What they import from
  installed packages must exist on the workers: on a cluster ship it with ``runtime_env`` (``working_dir`` /
  ``py_modules``). Each task carries the driver's results version; a worker with other raybt code refuses to run.
* **Failures.** A worker process that dies is retried by Ray (``max_retries``); the driver receives each task's result
  once, and the checkpoint store de-duplicates by key in any case. A batch that kills its worker every time is
  bisected until the guilty job is alone; that job becomes an error row (see :meth:`RayExecutor.run`). Tasks killed
  by Ray's memory monitor are retried at most ``TASK_RETRIES`` times (``RAY_task_oom_retries``, unless set, and only
  when Ray is initialised by this process) and then bisected the same way. In-process (``n_workers=None``/``1``)
  nothing is isolated: a job that kills its process kills the driver.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import psutil
import ray
from ray import cloudpickle

from raybt.batch import Batch, BatchResult, run_batch
from raybt.code_digest import user_modules
from raybt.data import MarketData
from raybt.executors import ray_env
from raybt.plan import RESULTS_VERSION, RunSettings
from raybt.strategy import Strategy

TASK_RETRIES = 1
"""Ray's retries of a batch whose worker process or node died; also the bound on retries of a task killed by Ray's
memory monitor (``RAY_task_oom_retries``; Ray's default retries those without limit). After them the batch is
split in halves, and those again, so a lost node costs a few more tasks and a job that kills every worker it runs
on is found (:meth:`RayExecutor.run`)."""

_WORKER_DIED = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError)
"""What ``ray.get`` raises when a task's process or node died (or the result was lost with its node)."""


class PicklingError(TypeError):
    """A strategy cannot be sent to Ray workers; the message names the strategy and the offending attribute."""


def check_picklable(strategies: Sequence[Strategy]) -> None:
    """Pre-flight before any task is submitted: pickle one instance of every strategy class with cloudpickle (what
    Ray uses). Instances hold only scalar parameters, so one per class stands for all. On failure, name the class
    attribute that cannot be pickled."""
    seen: set[type] = set()
    for strategy in strategies:
        cls = type(strategy)
        if cls in seen:
            continue
        seen.add(cls)
        try:
            cloudpickle.dumps(strategy)
        except Exception as exc:  # noqa: BLE001 - cloudpickle raises many types
            raise PicklingError(f"strategy {strategy!r} cannot be pickled for Ray workers: "
                                f"{_culprit(cls)}{type(exc).__name__}: {exc}") from exc


def ship_user_modules(strategies: Sequence[Strategy]) -> None:
    """Register every user module the strategy classes reach (:func:`raybt.code_digest.user_modules`: their own, their
    user base classes', the helpers and constants they use) for pickling by value. Workers then run exactly the code
    the driver's keys were computed from, even after the user edited and reloaded a module that a long-lived worker
    imported earlier, and need not be able to import it at all. Installed packages and raybt are pickled by
    reference (raybt's own version is checked by each task, see :func:`_run_remote`)."""
    for cls in {type(s) for s in strategies}:
        for module in user_modules(cls):
            # __main__, and modules no longer (or never) in sys.modules, are pickled by value anyway
            if module.__name__ != "__main__" and sys.modules.get(module.__name__) is module:
                cloudpickle.register_pickle_by_value(module)


def _culprit(cls: type) -> str:
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("__"):
                continue
            try:
                cloudpickle.dumps(value)
            except Exception:  # noqa: BLE001
                return f"attribute {klass.__qualname__}.{name} ({type(value).__name__}) is not picklable; "
    return ""


def _run_remote(market: MarketData, batch: Batch, settings: RunSettings, profile: bool) -> BatchResult:
    context = ray.get_runtime_context()
    worker = f"{context.get_node_id()}:{os.getpid()}"
    if settings.results_version != RESULTS_VERSION:
        raise RuntimeError(f"worker {worker} runs raybt code of results version {RESULTS_VERSION} "
                           f"({Path(__file__).parents[1]}) but the driver's is {settings.results_version}: install "
                           f"the same raybt on every node (its rows would be stored under keys of other code)")
    return run_batch(market, batch, settings, profile, worker=worker)


class RayExecutor:
    """Runs batches as Ray tasks, one CPU each. ``n_workers=-1`` uses every CPU of the cluster (and keeps twice as
    many tasks queued so no worker idles); ``n_workers=N`` runs at most N tasks at once."""

    def __init__(self, market: MarketData, settings: RunSettings, *, n_workers: int = -1, address: str | None = None,
                 profile: bool = False):
        self.started_ray = connect(address, market.nbytes)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.n_workers = cpus if n_workers == -1 else n_workers
        self.window = 2 * cpus if n_workers == -1 else n_workers
        self._market = market  # for the rows of jobs whose worker died (built here)
        self._market_ref = ray.put(market)
        self._settings, self._profile = settings, profile
        task = ray.remote(num_cpus=1)(_run_remote)
        self._task, self._rerun = task.options(max_retries=TASK_RETRIES), task.options(max_retries=0)

    def run(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        """Yield each batch's result in completion order, with at most ``window`` tasks in flight.

        A batch whose worker process died after Ray's retries (a segfault, ``os._exit``, the OOM killer, a lost
        node) is split in halves that run again without Ray's retries, and so on, until one job runs alone; a job
        whose worker dies when it runs alone, twice, is the culprit: its result is the error ``"worker process
        died: ..."``, and every other job of the batch gets its row. A job that always crashes costs
        ``TASK_RETRIES + 1`` worker processes in its batch, one per halving after that (log2 of ``batch_size``
        halvings) and two alone; each new worker process takes a second or more to start."""
        pending = iter(batches)
        reruns: deque[tuple[Batch, bool]] = deque()  # (part of a crashed batch, already run alone once)
        in_flight: dict[ray.ObjectRef, tuple[Batch, bool]] = {}

        def top_up() -> None:
            while len(in_flight) < self.window:
                if reruns:
                    batch, ran_alone = reruns.popleft()
                    in_flight[self._submit(self._rerun, batch)] = batch, ran_alone
                    continue
                batch = next(pending, None)
                if batch is None:
                    return
                in_flight[self._submit(self._task, batch)] = batch, False

        # Tasks still in flight when the caller stops (Ctrl-C, a failed job) are left to finish, not cancelled:
        # ray.cancel racing a task's completion aborted the driver at exit (Ray 2.60: "Tried to complete task that
        # was not pending"), and a driver that exits takes its tasks with it anyway.
        top_up()
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            batch, ran_alone = in_flight.pop(done[0])
            try:
                result = ray.get(done[0])
            except _WORKER_DIED as exc:
                result = _crashed(batch, exc, self._market) if ran_alone else None
                if len(batch.jobs) > 1:
                    reruns.extend((half, False) for half in batch.halves())
                elif not ran_alone:
                    reruns.append((batch, True))
            top_up()
            if result is not None:
                yield result

    def _submit(self, task, batch: Batch) -> ray.ObjectRef:
        return task.remote(self._market_ref, batch, self._settings, self._profile)

    def close(self) -> None:
        """Release the data in the object store (Ray itself keeps running)."""
        del self._market_ref, self._market


def _crashed(batch: Batch, exc: Exception, market: MarketData) -> BatchResult:
    """The error result of a one-job batch whose worker process died each time it ran."""
    strategy, date_range, symbol = batch.strategies[0], batch.date_ranges[0], batch.symbols[0]
    name = date_range.name if date_range is not None else "all data"
    where = f" of symbol {symbol!r}" if symbol is not None else ""
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    strategy_id = batch.strategy_ids[0] if batch.strategy_ids is not None else strategy.id
    return BatchResult.failed(batch, f"worker process died: {type(exc).__name__} while running {strategy!r} "
                                     f"(id {strategy_id}) on range {name!r}{where}, twice when run alone: {cause}",
                              market=market)


def connect(address: str | None, data_bytes: int) -> bool:
    """Join the given or ambient cluster, or start a local Ray (also when ``address="local"``, as ``ray.init`` does,
    whatever ``RAY_ADDRESS`` says); returns True if a local Ray was started here. Another thread than the main one
    may call it if it outlives the Ray it starts (:mod:`raybt.executors.hybrid`)."""
    # Read by the driver's core worker (the owner of the tasks) when Ray is initialised in this process.
    os.environ.setdefault("RAY_task_oom_retries", str(TASK_RETRIES))
    if ray.is_initialized():
        return False
    if address != "local" and (address is not None or os.environ.get("RAY_ADDRESS")):
        ray.init(address=address, log_to_driver=True)
        return False
    import_path = tuple(dict.fromkeys(os.path.realpath(p or os.getcwd()) for p in sys.path))
    start_local_ray(num_cpus=os.cpu_count(), include_dashboard=False,
                    object_store_memory=object_store_bytes(data_bytes), log_to_driver=True,  # strategies' print()s
                    logging_level=logging.WARNING,  # no Ray start-up chatter in a notebook cell
                    runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(import_path)}})
    return True


def start_local_ray(**init_options) -> None:
    """``ray.init(address="local", **init_options)`` under the rules of :mod:`raybt.executors.ray_env`: Ray >= 2.54,
    token authentication with an owner-only token file, every server on 127.0.0.1 (unless the user opted in to
    other machines), a watchdog that takes Ray down with this process.

    Ray reads the loopback switch and the authentication mode when it is imported, so a driver that imported Ray
    before raybt set them holds stale values: Ray's own switch is turned off for the duration of the start
    (``ray.init`` otherwise turns ``_node_ip_address="127.0.0.1"`` into the machine's address) and Ray's
    configuration is re-read (what Ray itself does when it turns token authentication on). Both are checked
    afterwards: a Ray that came up otherwise is refused."""
    from ray._private import ray_constants
    from ray._raylet import AuthenticationMode, Config, get_authentication_mode

    ray_env.check_ray_version(ray.__version__)
    ray_env.require_token_auth()
    Config.initialize("")
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        raise ray_env.LocalRayError("Ray did not take up RAY_AUTH_MODE=token; set it before importing ray")
    ray_env.secure_token_file()
    loopback = ray_env.loopback_requested()
    # before ray.init: a driver stopped in the middle of the start (Ctrl-C, an exception in the main thread while
    # the hand-over executor starts Ray in its thread) must not leave the processes started so far behind
    ray_env.start_watchdog()
    if loopback:
        cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            with ray_env.loopback_only():
                ray.init(address="local", _node_ip_address=ray_env.LOOPBACK, **init_options)
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
    else:
        ray.init(address="local", **init_options)
    node = ray.util.get_node_ip_address()
    if loopback and node != ray_env.LOOPBACK:
        ray.shutdown()
        raise ray_env.LocalRayError(f"the local Ray came up on {node}, not {ray_env.LOOPBACK}, and was shut down; set "
                                    f"{ray_env.CLUSTER_MODE}=0 in the environment before importing ray")


def object_store_bytes(data_bytes: int) -> int:
    """Object store size for a local start: room for the data several times over, at least 256 MiB, at most a
    quarter of the memory available now."""
    available = psutil.virtual_memory().available
    return int(min(max(256 * 2**20, 8 * data_bytes), max(available // 4, 128 * 2**20)))


def _warm_up() -> int:
    """Import raybt's compute path and run one tiny backtest, loading the compiled kernels from numba's cache."""
    import raybt
    from raybt.demo import SmaCross

    data = raybt.synthetic_ohlcv(["WARM"], "2023-01-01", "2023-01-08", "1h", seed=0)
    raybt.run_backtest(SmaCross(fast=3, slow=12), data)
    return os.getpid()


def warm_up_workers() -> None:
    """Run :func:`_warm_up` once per CPU of the cluster and wait for them: a fresh worker spends a second or more
    importing raybt and loading kernels, and a sweep handed to Ray (:mod:`raybt.executors.hybrid`) should not wait
    for that while the driver could have computed."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    warm = ray.remote(num_cpus=1)(_warm_up)
    ray.get([warm.remote() for _ in range(cpus)])
