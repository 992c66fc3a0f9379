"""Multi-node Ray on 127.0.0.1: tasks on both nodes, losing a node mid-sweep, and `ray job submit` of `raybt run`.

These tests start their own clusters, so any Ray the session started is shut down first (the `ray_cluster` fixture
starts it again when a later test needs it). Node start-up is allowed well over 60 s.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import raybt
from sweeps import DATA, RANGES, Slow, SmaCross, comparable

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

def node_of(worker: str) -> str:
    return worker.rsplit(":", 1)[0]


@pytest.fixture()
def two_nodes():
    """A head node and a worker node, one CPU each, on this machine."""
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 128 * 2**20})
    worker = cluster.add_node(num_cpus=1, object_store_memory=128 * 2**20)
    cluster.wait_for_nodes(timeout=120)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_sweep_uses_both_nodes_and_matches_a_local_run(two_nodes):
    cluster, _ = two_nodes
    grid = [SmaCross(fast=f, slow=s) for f in range(2, 14) for s in (20, 30)]
    local = raybt.run_backtests(grid, DATA, RANGES, fees=0.001, show_progress=False)
    remote = raybt.run_backtests(grid, DATA, RANGES, fees=0.001, n_workers=-1, address=cluster.address,
                                 batch_size=3, show_progress=False)
    assert len(ray.nodes()) == 2
    assert remote.df["worker"].map(node_of).nunique() == 2, "tasks did not land on both nodes"
    assert comparable(remote.df).equals(comparable(local.df))


def test_losing_a_node_mid_sweep(two_nodes, tmp_path):
    cluster, worker = two_nodes
    grid = [Slow(n=n, sleep_ms=15.0) for n in range(1, 121)]
    ck = tmp_path / "ck"
    outcome = {}

    def sweep():
        try:
            outcome["results"] = raybt.run_backtests(grid, DATA, RANGES, n_workers=-1, address=cluster.address,
                                                     batch_size=4, checkpoint_dir=str(ck), checkpoint_batch_size=8,
                                                     show_progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=sweep)
    thread.start()
    deadline = time.monotonic() + 120
    while not list((ck / "parts").glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.remove_node(worker, allow_graceful=False)  # the node dies with tasks in flight
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    results = outcome["results"]
    df = results.df
    assert len(df) == 240 and df["key"].is_unique and df["error"].isna().all()
    assert len(raybt.load_results(str(ck))) == 240
    local = raybt.run_backtests([Slow(n=n, sleep_ms=0.0) for n in range(1, 121)], DATA, RANGES,
                                show_progress=False).df
    pd_local = comparable(local).drop(columns=["key", "strategy_id", "sleep_ms", "parameters"])
    pd_remote = comparable(df).drop(columns=["key", "strategy_id", "sleep_ms", "parameters"])
    assert pd_remote.sort_values(["n", "range"]).reset_index(drop=True).equals(
        pd_local.sort_values(["n", "range"]).reset_index(drop=True))


# ------------------------------------------------------------------------------------------- ray job submit

SPEC = textwrap.dedent("""
    import raybt
    from user_strategies import Breakout   # shipped to the cluster with --working-dir

    data = raybt.synthetic_ohlcv(["ETH"], "2023-01-01", "2023-03-01", "1h", seed=3)
    strategies = [Breakout(window=w) for w in (12, 24, 48, 96)]
    date_ranges = [raybt.DateRange("2023-01-01", "2023-02-01", name="jan"), raybt.DateRange("2023-02-01", None, name="feb")]
    fees = 0.001
    n_workers = -1
    show_progress = False
""")

USER_STRATEGIES = textwrap.dedent("""
    import raybt

    class Breakout(raybt.Strategy):
        window: int = 24

        def signals(self, data):
            high = data.close.rolling(self.window).max().shift(1)
            low = data.close.rolling(self.window).min().shift(1)
            return data.close > high, data.close < low
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ray_job_submit_runs_raybt_run_from_a_working_dir(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "spec.py").write_text(SPEC)
    (job_dir / "user_strategies.py").write_text(USER_STRATEGIES)
    ck = tmp_path / "results"
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    env.pop("RAY_ADDRESS", None)
    port, dashboard, agent = free_port(), free_port(), free_port()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    # The job agent's port too: its default (52365) is taken by any other Ray with a dashboard on the machine.
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                             f"--dashboard-agent-listen-port={agent}", "--disable-usage-stats"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        submit = [ray_cli, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir",
                  str(job_dir), "--", "raybt", "run", "spec.py", "--address", "auto", "--checkpoint-dir", str(ck)]
        deadline = time.monotonic() + 180
        while True:  # the job server answers a little after the head node is up
            done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
            if done.returncode == 0 or time.monotonic() > deadline or "Connection" not in done.stderr + done.stdout:
                break
            time.sleep(3)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "8 backtests: 4 strategies × 2 range(s), 0 failed" in done.stdout
        stored = raybt.load_results(str(ck)).df
        assert len(stored) == 8 and stored["error"].isna().all()
        assert set(stored["window"]) == {12, 24, 48, 96}
    finally:
        # `ray start --block` takes ~30 s to stop gracefully (its dashboard agents); a few seconds, then the group
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=60)
