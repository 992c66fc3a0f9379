"""Kill a local Ray's processes once the driver that started it is gone: ``python ray_watchdog.py DRIVER PID...``.

Started by the driver (``ray_env.start_watchdog``) right after ``ray.init`` with the pids of the processes that
``ray.init`` spawned (GCS, raylet, dashboard, monitors). Ray's own fate-sharing takes the GCS and raylet down with
a killed driver, but its agents (dashboard agent, runtime-env agent) keep retrying the dead GCS for 20 s or more.

Rules:

* every ``POLL_S`` the watchdog checks its parent; the driver is gone when the watchdog has been re-parented
  (its parent pid changed), which happens as the driver exits, before anyone reaps it;
* every ``RECORD_S`` it records the live descendants of the Ray processes (workers and agents come and go), as
  ``psutil.Process`` objects, so a pid reused by an unrelated process is never killed;
* once the driver is gone it kills (SIGKILL) every recorded process still running, their descendants and the
  workers started since the last record (orphans by then: Ray puts their raylet's pid in their environment,
  ``RAY_RAYLET_PID``), twice, ``SWEEP_GAP_S`` apart (a worker forked at the last moment), then exits;
* it also exits, killing nothing, once every recorded process has ended (the user shut Ray down).

Runs as a script (no raybt import: it starts in milliseconds) and needs only psutil.
"""

from __future__ import annotations

import os
import sys
import time

import psutil

POLL_S = 0.2
RECORD_S = 1.0
SWEEP_GAP_S = 1.0


def watch(driver_pid: int, ray_pids: list[int]) -> None:
    recorded = _alive(ray_pids)
    ray_started = min((process.create_time() for process in recorded), default=time.time())
    raylets = {str(process.pid) for process in recorded if _name(process) == "raylet"}  # started by ray.init
    last_record = time.monotonic()
    while os.getppid() == driver_pid:
        if time.monotonic() - last_record >= RECORD_S:
            recorded = _with_descendants(recorded)
            last_record = time.monotonic()
            if not recorded:
                return
        time.sleep(POLL_S)
    for sweep in range(2):
        doomed = _with_descendants(recorded) + _workers_of(raylets, ray_started)
        for process in doomed:
            try:
                process.kill()
            except psutil.Error:
                pass  # gone meanwhile
        psutil.wait_procs(doomed, timeout=5)
        if sweep == 0:
            time.sleep(SWEEP_GAP_S)


def _workers_of(raylet_pids: set[str], since: float) -> list[psutil.Process]:
    """Processes started since ``since`` whose environment names one of ``raylet_pids`` as their raylet."""
    found = []
    for process in psutil.process_iter(["create_time"]):
        if process.info["create_time"] < since or process.pid == os.getpid():
            continue
        try:
            if process.environ().get("RAY_RAYLET_PID") in raylet_pids:
                found.append(process)
        except psutil.Error:
            pass  # gone, or not ours to read
    return found


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""


def _alive(pids: list[int]) -> list[psutil.Process]:
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return processes


def _with_descendants(processes: list[psutil.Process]) -> list[psutil.Process]:
    """``processes`` still running and all their descendants, from one pass over the process table (asking each
    process for its children would scan the whole table once per process, every ``RECORD_S``). A descendant
    started before its recorded ancestor is a reused pid, not ours."""
    children: dict[int, list[psutil.Process]] = {}
    for process in psutil.process_iter(["ppid", "create_time"]):
        if process.info["ppid"] is not None:
            children.setdefault(process.info["ppid"], []).append(process)
    found: dict[int, psutil.Process] = {}
    # is_running also compares creation times: a recorded process whose pid was reused is not ours
    pending = [process for process in processes if process.is_running()]
    while pending:
        process = pending.pop()
        if process.pid in found:
            continue
        found[process.pid] = process
        started = _created(process)
        pending.extend(child for child in children.get(process.pid, ())
                       if child.pid != process.pid and (child.info["create_time"] or 0.0) >= started)
    return list(found.values())


def _created(process: psutil.Process) -> float:
    try:
        return process.create_time()
    except psutil.Error:
        return 0.0


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(pid) for pid in sys.argv[2:]])
