"""Nothing of a local Ray that a sweep starts in the background outlives the driver, whatever the moment the
driver stops: Ctrl-C (SIGINT to its process group, as a terminal sends it) right after the start is asked for, while
Ray's processes appear, after the hand-over; a job error (``continue_on_error=False``) and SIGKILL while they appear.

Each case is a ``raybt run --n-workers -1`` command in a session of its own, with a Ray temporary directory of its
own (``RAY_TMPDIR``); the cases run side by side. Until the driver stops, the test records the driver's process
tree; after the driver has exited, every recorded process and every process holding a file under that directory
must be gone within ``GRACE_S`` (no process of another test, or of the session's Ray, is looked at). The sweep's
own contract holds too: exit code 130 and one line saying what was saved, or the job's error. The old code left the
dashboard and runtime-env agents of every case stopped while Ray's processes appeared.

A Ctrl-C or an error that stops a sweep while Ray starts ends the program once ``ray.init`` has returned
(raybt.executors.hybrid; a sweep that completes does not wait: tests/test_handover.py); a second Ctrl-C ends it at
once (the last test).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

import raybt

GRACE_S = 8.0  # what is left of the driver's Ray must be gone within this after the driver exited
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
N_JOBS = 3000

SPEC = textwrap.dedent("""
    import os
    import time

    import raybt

    class Marks(raybt.Strategy):
        n: int = 0

        def signals(self, data):
            time.sleep(0.05)  # 3000 jobs of 50 ms: worth starting Ray for after the first two; little CPU
            with open({marker!r}, "a") as handle:
                handle.write(f"{{os.getpid()}}\\n")
            if os.path.exists({fail!r}):
                raise ValueError("failed on purpose while Ray starts")
            return data.close > data.close.shift(1), data.close < data.close.shift(1)

    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-01-15", "1h", seed=1)
    strategies = [Marks(n=n) for n in range({n_jobs})]
""")

WAITING = "raybt: waiting for the local Ray that is still starting"  # said at exit while Ray starts
SAVED = re.compile(rf"raybt run: interrupted: (\d+) of {N_JOBS} backtests saved in (\S+); run again to resume")


@dataclass
class Case:
    """One driver: ``stop`` ("interrupt", "fail" or "kill": SIGKILL) once ``moment`` is seen."""

    moment: str
    stop: str
    folder: Path
    ray_tmp: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="rbo", dir="/tmp"))  # short: socket paths
    recorded: dict[int, psutil.Process] = field(default_factory=dict)
    stopped_at: float | None = None  # time.monotonic() when the driver was stopped
    exited_at: float | None = None  # time.monotonic() when the driver was seen to have exited
    cleanup_s: float | None = None  # from then until nothing of its Ray was left
    left: list[psutil.Process] = field(default_factory=list)

    def __post_init__(self):
        self.folder.mkdir()
        (self.folder / "spec.py").write_text(SPEC.format(marker=str(self.marker), fail=str(self.fail_flag),
                                                         n_jobs=N_JOBS))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["RAY_TMPDIR"] = self.ray_tmp
        with (self.folder / "stderr").open("w") as stderr:  # a file: nobody reads a pipe while the driver runs
            self.process = subprocess.Popen(
                [sys.executable, "-m", "raybt.cli", "run", "spec.py", "--n-workers", "-1", "--batch-size", "1",
                 "--checkpoint-dir", str(self.checkpoint), "--checkpoint-batch-size", "100000", "--no-progress"],
                cwd=self.folder, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        self.started = psutil.Process(self.process.pid).create_time()
        self.launched = time.monotonic()

    @property
    def stderr(self) -> str:
        return (self.folder / "stderr").read_text()

    @property
    def marker(self) -> Path:
        return self.folder / "marker"

    @property
    def fail_flag(self) -> Path:
        return self.folder / "fail"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "ck"

    def record(self, children: dict[int, list[psutil.Process]]) -> None:
        pending = list(children.get(self.process.pid, ()))
        while pending:
            process = pending.pop()
            if process.pid not in self.recorded:
                self.recorded[process.pid] = process
                pending.extend(children.get(process.pid, ()))

    def reached(self) -> bool:
        marks = self.marker.read_text().split() if self.marker.exists() else []
        names = {p.info["name"] for p in self.recorded.values()}
        if self.moment == "sweep started":
            return len(marks) >= 3  # the start is asked for after the first two jobs
        if self.moment == "ray processes appear":
            return "raylet" in names
        if self.moment == "handed over":
            return any(int(pid) != self.process.pid for pid in marks)
        raise ValueError(self.moment)

    def stop_now(self) -> None:
        self.stopped_at = time.monotonic()
        if self.stop == "interrupt":
            os.killpg(self.process.pid, signal.SIGINT)
        elif self.stop == "kill":
            self.process.kill()
        else:
            self.fail_flag.touch()

    def step(self, children: dict[int, list[psutil.Process]]) -> bool:
        """Record, stop at the moment, then watch the driver exit and its Ray go; True once this case is over."""
        now = time.monotonic()
        if self.stopped_at is None:
            assert self.process.poll() is None, (self.moment, self.stderr[-3000:])
            self.record(children)
            if self.reached():
                self.stop_now()
        elif self.exited_at is None:
            if self.process.poll() is not None:
                self.exited_at = now
        elif self.cleanup_s is None:
            self.left = self.leftovers()
            if not self.left:
                self.cleanup_s = now - self.exited_at
            else:
                return now - self.exited_at > GRACE_S
        return self.cleanup_s is not None

    def leftovers(self) -> list[psutil.Process]:
        """Recorded processes still running, and processes started since the driver that hold a file under its Ray
        temporary directory."""
        found = {pid: p for pid, p in self.recorded.items() if _running(p)}
        for process in psutil.process_iter(["create_time"]):
            if process.pid in found or (process.info["create_time"] or 0) < self.started:
                continue
            try:
                if any(f.path.startswith(self.ray_tmp) for f in process.open_files()) and _running(process):
                    found[process.pid] = process
            except psutil.Error:
                pass  # gone, or not ours to read
        return list(found.values())


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _children() -> dict[int, list[psutil.Process]]:
    children: dict[int, list[psutil.Process]] = {}
    for process in psutil.process_iter(["ppid", "name"]):
        children.setdefault(process.info["ppid"], []).append(process)
    return children


def _stored_rows(checkpoint: Path) -> int:
    parts = list((checkpoint / "parts").glob("*.parquet"))
    return sum(len(pd.read_parquet(part)) for part in parts)


class Up(raybt.Strategy):
    def signals(self, data):
        return data.close > data.close.shift(1), data.close < data.close.shift(1)


def test_no_ray_process_outlives_a_driver_stopped_while_ray_starts(tmp_path):
    # compiled here first (from numba's cache when warm): five drivers compiling the same bar loop at once would
    # take minutes on a cold cache
    raybt.run_backtests([Up()], raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-01-15", "1h", seed=1),
                        show_progress=False)
    cases = [Case("sweep started", "interrupt", tmp_path / "early"),
             Case("ray processes appear", "interrupt", tmp_path / "appearing"),
             Case("handed over", "interrupt", tmp_path / "handed"),
             Case("ray processes appear", "fail", tmp_path / "failing"),
             Case("ray processes appear", "kill", tmp_path / "killed")]
    try:
        deadline = time.monotonic() + 120
        while not all([case.step(_children()) for case in cases]):
            assert time.monotonic() < deadline, [(c.moment, c.stop, c.stopped_at, c.exited_at) for c in cases]
            time.sleep(0.2)
        for c in cases:
            print(f"{c.moment}, {c.stop}: stopped {c.stopped_at - c.launched:.1f} s after launch, exited "
                  f"{c.exited_at - c.stopped_at:.1f} s later, its Ray gone {c.cleanup_s} s after that")
        assert not [case.left for case in cases if case.left], [
            (c.moment, c.stop, [(p.pid, _name(p)) for p in c.left]) for c in cases if c.left]
        for case in cases:
            stderr = case.stderr
            if case.stop == "interrupt":
                assert case.process.returncode == EXIT_INTERRUPTED, (case.moment, stderr[-3000:])
                saved = SAVED.findall(stderr)
                assert len(saved) == 1 and saved[0][1] == str(case.checkpoint), (case.moment, stderr[-3000:])
                # raybt's last line (Ray may print warnings of its own after it, e.g. when ray.init returns)
                said = [line for line in stderr.splitlines()
                        if line.startswith("raybt") and not line.startswith(WAITING)]
                assert said[-1].startswith("raybt run: interrupted: "), stderr[-3000:]
                assert _stored_rows(case.checkpoint) == int(saved[0][0])
            elif case.stop == "fail":
                assert case.process.returncode == EXIT_FAILED, stderr[-3000:]
                assert "BacktestError" in stderr and "failed on purpose while Ray starts" in stderr, stderr[-3000:]
            assert "Traceback" not in stderr, (case.moment, case.stop, stderr[-3000:])
    finally:
        for case in cases:
            if case.process.poll() is None:
                os.killpg(case.process.pid, signal.SIGKILL)
                case.process.wait()
            for process in case.leftovers():
                try:
                    process.kill()
                except psutil.Error:
                    pass
            shutil.rmtree(case.ray_tmp, ignore_errors=True)


SECOND_CTRL_C = textwrap.dedent("""
    import atexit, os, signal, time
    from raybt.executors import hybrid

    class StillStarting:
        finished = False

        def finish_without_warm_up(self, timeout):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again while the exit waits
            time.sleep(timeout)

    atexit.register(print, "the rest of the exit ran")  # runs after raybt's handler (last registered, first run)
    atexit.register(hybrid._finish_start_at_exit)
    hybrid._current = StillStarting()
    hybrid._wait_at_exit = True  # as a sweep stopped by an exception while Ray starts leaves it
""")


def test_a_second_ctrl_c_while_the_exit_waits_for_ray_ends_the_process_at_once(tmp_path):
    """A start that never finishes stands in; the exit says why it waits, and a Ctrl-C then ends the process by
    SIGINT, skipping the rest of the exit (the watchdog takes a half-started Ray down: the test above)."""
    done = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == -signal.SIGINT, done.stderr
    assert WAITING in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "the rest of the exit ran" not in done.stdout
