"""Kill a local Ray's processes once the driver that started it is gone: ``python ray_watchdog.py DRIVER``.

Started by the driver (``ray_env.start_watchdog``) just *before* ``ray.init``, so that a driver stopped at any
moment of the start (Ctrl-C, an exception, SIGKILL) leaves nothing behind. Ray's own fate-sharing takes the GCS and
raylet down with the driver (``PR_SET_PDEATHSIG``), but not what the raylet spawned: its agents (dashboard agent,
runtime-env agent), orphaned by then, keep retrying the dead GCS for 20 s or more, and with no parent to look
for they are no longer anyone's descendants.

Rules:

* the driver's Ray is every process started since the watchdog that holds a file open under a
  session directory of that driver, ``.../session_<date>_<time>_<DRIVER pid>/`` (Ray names a local session after
  the process that ran ``ray.init``; every Ray process holds its logs there from its first instant: the GCS, raylet
  and helpers their ``.out``/``.err``, agents and workers the raylet's or their own, and they keep them when their
  parent dies and when they rename themselves, ``ray::DashboardAgent``), plus their descendants. Processes older
  than the watchdog are never taken: a pid or session name of an earlier driver is not this one.
* every ``POLL_S`` the watchdog checks its parent; the driver is gone when the watchdog has been re-parented
  (its parent pid changed), which happens as the driver exits, before anyone reaps it;
* every ``RECORD_S`` it records the driver's Ray children and their live descendants (workers and agents come and
  go), as ``psutil.Process`` objects, so a pid reused by an unrelated process is never killed;
* once the driver is gone it kills (SIGKILL) every recorded process still running, every process of the driver's
  Ray (found anew: those started since the last record, and those a dying raylet orphaned) and their descendants,
  twice, ``SWEEP_GAP_S`` apart (a worker forked at the last moment), then exits;
* it also exits, killing nothing, once the Ray it recorded has ended (the user shut Ray down).

Runs as a script (no raybt import: it starts in milliseconds) and needs only psutil.
"""

from __future__ import annotations

import os
import re
import sys
import time

import psutil

POLL_S = 0.2
RECORD_S = 1.0
SWEEP_GAP_S = 1.0


def watch(driver_pid: int) -> None:
    since = psutil.Process().create_time()  # started before ray.init: every process of the driver's Ray is younger
    session = _session_pattern(driver_pid)
    recorded: list[psutil.Process] = []
    ray_seen = False
    last_record = time.monotonic()
    while os.getppid() == driver_pid:
        if time.monotonic() - last_record >= RECORD_S:
            table = _children_by_parent()
            known = {process.pid for process in recorded}
            new_ray_children = [child for child in table.get(driver_pid, ())
                                if child.pid not in known and _holds_session_file(child, session, since)]
            recorded = _with_descendants(recorded + new_ray_children, table)
            last_record = time.monotonic()
            if recorded:
                ray_seen = True
            elif ray_seen:
                return
        time.sleep(POLL_S)
    for sweep in range(2):
        doomed = _with_descendants(recorded + _in_session(session, since), _children_by_parent())
        for process in doomed:
            try:
                process.kill()
            except psutil.Error:
                pass  # gone meanwhile
        psutil.wait_procs(doomed, timeout=5)
        if sweep == 0:
            time.sleep(SWEEP_GAP_S)


def _session_pattern(driver_pid: int) -> re.Pattern[str]:
    """A path inside a session directory of a local Ray started by the process ``driver_pid``."""
    return re.compile(rf"[/\\]session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{driver_pid}[/\\]")


def _in_session(session: re.Pattern[str], since: float) -> list[psutil.Process]:
    """Every process started since ``since`` that holds a file of the session open, orphans included."""
    return [process for process in psutil.process_iter() if _holds_session_file(process, session, since)]


def _holds_session_file(process: psutil.Process, session: re.Pattern[str], since: float) -> bool:
    if process.pid == os.getpid():
        return False
    try:
        return process.create_time() >= since and any(session.search(file.path) for file in process.open_files())
    except psutil.Error:
        return False  # gone, or not ours to read


def _children_by_parent() -> dict[int, list[psutil.Process]]:
    """Every process by its parent's pid, from one pass over the process table (asking each process for its
    children would scan the whole table once per process, every ``RECORD_S``)."""
    children: dict[int, list[psutil.Process]] = {}
    for process in psutil.process_iter(["ppid", "create_time"]):
        if process.info["ppid"] is not None:
            children.setdefault(process.info["ppid"], []).append(process)
    return children


def _with_descendants(processes: list[psutil.Process],
                      children: dict[int, list[psutil.Process]]) -> list[psutil.Process]:
    """``processes`` still running and all their descendants in ``children`` (:func:`_children_by_parent`). A
    descendant started before its recorded ancestor is a reused pid, not ours."""
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
    watch(int(sys.argv[1]))
