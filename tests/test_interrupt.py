"""Ctrl-C during a sweep: every finished row is flushed, one line says what was saved, no traceback from Ray or the
strategy, exit code 130 from the command line.

Each test runs a sweep in a subprocess of its own session and sends SIGINT to its whole process group (what Ctrl-C
in a terminal does) once the strategy has run a dozen jobs. ``checkpoint_batch_size`` is far above the number of
jobs, so nothing is flushed on the way: every stored row was buffered when the interrupt came. The strategy appends
its parameter to a marker file as its last step, so the marker holds every job that finished (plus at most those
still in flight) and the stored rows can be checked against it.
"""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd

SPEC = textwrap.dedent("""
    import time

    import raybt

    class Marks(raybt.Strategy):
        n: int = 0
        marker: str = ""

        def signals(self, data):
            time.sleep(0.02)
            with open(self.marker, "a") as handle:
                handle.write(f"{{self.n}}\\n")
            return data.close > data.close.shift(1), data.close < data.close.shift(1)

    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-02-01", "1h", seed=1)
    strategies = [Marks(n=n, marker={marker!r}) for n in range(3000)]
    batch_size = 1
    checkpoint_batch_size = 100_000
    show_progress = False
""")

LIBRARY = textwrap.dedent("""
    import sys

    import raybt

    sys.path.insert(0, {folder!r})
    spec = __import__("spec")
    raybt.run_backtests(spec.strategies, spec.data, address={address!r}, batch_size=1, checkpoint_dir={ck!r},
                        checkpoint_batch_size=100_000, show_progress=False)
""")

MARKS_BEFORE_INTERRUPT = 12
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
MESSAGE = re.compile(r"interrupted: (\d+) of 3000 backtests saved in (\S+); run again to resume")


def _interrupt(command, marker: Path, cwd: Path) -> subprocess.CompletedProcess:
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not (marker.exists() and len(marker.read_text().split()) >= MARKS_BEFORE_INTERRUPT):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the sweep produced no rows in 120 s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _check_saved(done: subprocess.CompletedProcess, ck: Path, marker: Path, in_flight: int) -> None:
    found = MESSAGE.findall(done.stderr)
    assert len(found) == 1, done.stderr
    n_reported, location = int(found[0][0]), found[0][1]
    assert location == str(ck)
    parts = list((ck / "parts").glob("*.parquet"))
    assert parts, f"no row saved; {n_reported} reported"
    stored = pd.concat([pd.read_parquet(p) for p in parts])
    marked = [int(n) for n in marker.read_text().split()]
    assert len(stored) == n_reported and stored["key"].is_unique and stored["error"].isna().all()
    assert set(stored["n"]) <= set(marked)  # only jobs that ran
    # Every job whose row reached the driver is stored: all marked jobs but those the interrupt caught in flight
    # (submitted, or taken from Ray and not yet buffered).
    assert len(stored) >= len(marked) - in_flight, (len(stored), len(marked))
    # no frame of Ray's or of the interrupted strategy in what is printed (Ray may print warnings of its own)
    assert not re.search(r'File "[^"]*[/\\]ray[/\\]', done.stderr) and "in signals" not in done.stderr, done.stderr


def _ray_in_flight(ray) -> int:
    """Jobs of a batch_size=1 sweep on Ray that Ctrl-C can catch unstored: the executor's window of queued tasks
    (twice the CPUs) plus the result it has taken from Ray and tops the window up before handing over."""
    return 2 * int(ray.cluster_resources()["CPU"]) + 1


def test_ctrl_c_on_the_command_line_in_process(tmp_path):
    _ctrl_c_on_the_command_line(tmp_path, ["--n-workers", "1"], in_flight=1)


def test_ctrl_c_on_the_command_line_on_ray(tmp_path, ray_cluster):
    """The sweep joins the session's Ray (a Ray of its own would take seconds to start): the driver is interrupted,
    the cluster is not."""
    _ctrl_c_on_the_command_line(tmp_path, ["--address", ray_cluster.get_runtime_context().gcs_address],
                                in_flight=_ray_in_flight(ray_cluster))


def _ctrl_c_on_the_command_line(tmp_path, options, in_flight):
    marker, ck = tmp_path / "marker", tmp_path / "ck"
    (tmp_path / "spec.py").write_text(SPEC.format(marker=str(marker)))
    done = _interrupt([sys.executable, "-m", "raybt.cli", "run", "spec.py", *options, "--checkpoint-dir", str(ck)],
                      marker, tmp_path)
    assert done.returncode == EXIT_INTERRUPTED, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("raybt run: interrupted: ")
    _check_saved(done, ck, marker, in_flight)


def test_ctrl_c_in_a_script_raises_keyboard_interrupt_saying_what_was_saved(tmp_path, ray_cluster):
    """The library flushes, then raises KeyboardInterrupt with the message, from run_backtests (no Ray frames)."""
    marker, ck = tmp_path / "marker", tmp_path / "ck"
    (tmp_path / "spec.py").write_text(SPEC.format(marker=str(marker)))
    address = ray_cluster.get_runtime_context().gcs_address
    (tmp_path / "script.py").write_text(LIBRARY.format(folder=str(tmp_path), address=address, ck=str(ck)))
    done = _interrupt([sys.executable, "script.py"], marker, tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("KeyboardInterrupt: interrupted: "), done.stderr
    assert done.stderr.count("Traceback") == 1
    _check_saved(done, ck, marker, in_flight=_ray_in_flight(ray_cluster))
