"""Security of a local Ray started by raybt, probed from outside the way an attacker on the machine would.

One driver subprocess per import order (``import ray`` before ``import raybt``, or raybt alone) runs a sweep with
``n_workers=-1, address="local"``, so raybt starts Ray in-process at once, under a temporary HOME (the real ``~/.ray/auth_token`` is never
touched). The tests then look at the driver's process tree from this process: its listening sockets, unauthenticated
HTTP and gRPC requests, Ray clients without the token or with a wrong one (in subprocesses, bounded by a timeout),
the token file's mode, and, last, what is left of Ray after the driver is SIGKILLed in the middle of a sweep.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import psutil
import pytest

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
JOB_AGENT_PORT = 52365  # the dashboard agent's HTTP server, with the job agent: Ray's fixed default
CLIENT_TIMEOUT_S = 30  # a Ray client that neither connects nor gives up is killed after this
KILL_GRACE_S = 8  # a Ray whose driver was SIGKILLed must be gone within this

DRIVER = textwrap.dedent("""
    import json, os, sys, time
    if sys.argv[1] == "ray_first":
        import ray  # a notebook that imported Ray before raybt
    import raybt

    class Up(raybt.Strategy):
        def signals(self, data):
            return data.close > data.close.shift(1), data.close < data.close.shift(1)

    class Slow(raybt.Strategy):
        n: int = 0

        def signals(self, data):
            time.sleep(1)
            return data.close > data.close.shift(1), data.close < data.close.shift(1)

    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-01-10", "1h")
    raybt.run_backtests([Up()], data, n_workers=-1, address="local", show_progress=False)
    import ray
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address}), flush=True)
    sys.stdin.readline()  # the tests probe this Ray, then ask for a sweep that is running when they kill the driver
    print("sweeping", flush=True)
    raybt.run_backtests([Slow(n=i) for i in range(200)], data, n_workers=-1, batch_size=1, show_progress=False)
""")

CLIENT = textwrap.dedent("""
    import sys
    import ray
    ray.init(address=sys.argv[1], log_to_driver=False)
    print("CONNECTED", ray.cluster_resources(), flush=True)
""")


class Driver:
    """A driver subprocess that started Ray through raybt, with its temporary HOME and environment."""

    def __init__(self, order: str, home: Path):
        self.order, self.home = order, home
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
        self.env["HOME"] = str(home)
        script = home / "driver.py"
        script.write_text(DRIVER)
        errors = home / "driver.err"  # a file, not a pipe nobody reads while the driver runs
        with errors.open("w") as stderr:
            self.process = subprocess.Popen([sys.executable, str(script), order], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=stderr, text=True, env=self.env,
                                            cwd=home)
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"driver ({order}) failed:\n{errors.read_text()[-4000:]}")
        self.gcs = json.loads(line)["gcs"]

    @property
    def token_file(self) -> Path:
        return self.home / ".ray" / "auth_token"

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def listening(self) -> list[tuple[str, str, int]]:
        """(process name, address, port) of every listening TCP socket of the driver and its descendants."""
        found = []
        for process in self.tree():
            try:
                found += [(process.name(), c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                pass
        return found


@pytest.fixture(scope="module", params=["raybt_first", "ray_first"])
def driver(request, tmp_path_factory):
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()  # the session's Ray would hold the job agent's fixed port
    home = tmp_path_factory.mktemp(f"home_{request.param}")
    if request.param == "ray_first":  # a token Ray wrote earlier, readable by everyone (Ray writes it 0644)
        (home / ".ray").mkdir()
        (home / ".ray" / "auth_token").write_text("0123456789abcdef" * 4)
        (home / ".ray" / "auth_token").chmod(0o644)
    started = Driver(request.param, home)
    yield started
    if started.process.poll() is None:  # the kill test did not run: take the Ray down with the driver
        tree = started.tree()
        for process in reversed(tree):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=10)
        started.process.wait()


def test_every_listening_socket_of_the_ray_tree_is_on_loopback(driver):
    listening = driver.listening()
    assert len({name for name, _, _ in listening}) >= 4, listening  # GCS, raylet, agents, workers: Ray is up
    assert [s for s in listening if s[1] not in LOOPBACK] == []


def test_no_http_endpoint_runs_a_job_without_the_token(driver):
    """Every listening port: POST a job that would create a marker file, with no token. Nothing accepts it, and
    the job agent (the dashboard agent's HTTP server on Ray's fixed port 52365) refuses it for want of the token:
    with the token the same route reaches its handler (a malformed request gets 400)."""
    marker = driver.home / "job_ran"
    token = driver.token_file.read_text().strip()
    job = json.dumps({"entrypoint": f"touch {marker}"})
    answers = {}
    for _, host, port in driver.listening():
        answers[port] = (_http(host, port, "POST", "/api/job_agent/jobs/", job),
                         _http(host, port, "POST", "/api/job_agent/jobs/", "{}", token))
    assert not [port for port, (status, _) in answers.items() if isinstance(status, int) and status < 300], answers
    time.sleep(1)
    assert not marker.exists()
    if JOB_AGENT_PORT not in answers:  # then this Ray's agent runs no HTTP server: nothing to post a job to
        holders = [psutil.Process(c.pid).name() for c in psutil.net_connections("inet")
                   if c.status == psutil.CONN_LISTEN and c.laddr.port == JOB_AGENT_PORT and c.pid]
        pytest.skip(f"port {JOB_AGENT_PORT} is held by another process ({holders}): this Ray has no job agent")
    assert answers[JOB_AGENT_PORT] == (401, 400)


def test_gcs_refuses_requests_without_the_right_token(driver):
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    def cluster_id(metadata):
        with grpc.insecure_channel(driver.gcs) as channel:
            stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
            try:
                stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), metadata=metadata, timeout=10)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    token = driver.token_file.read_text().strip()
    assert cluster_id(()) == grpc.StatusCode.UNAUTHENTICATED
    assert cluster_id((("authorization", "Bearer " + "f" * 64),)) == grpc.StatusCode.UNAUTHENTICATED
    assert cluster_id((("authorization", f"Bearer {token}"),)) == grpc.StatusCode.OK


def test_ray_clients_need_the_right_token(driver, tmp_path):
    """Real Ray clients (``ray.init(address=...)``), run at once in subprocesses bounded by CLIENT_TIMEOUT_S, as
    another user of the machine would start them (their own HOME, no token file): one without token
    authentication, one with a wrong token, and as the control one with the right token, which connects."""
    token = driver.token_file.read_text().strip()
    base = {**driver.env, "HOME": str(tmp_path), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else 127.0.0.1
            "RAY_NUM_REDIS_GET_RETRIES": "3"}  # -> this machine's address; a refused client gives up in ~3 s
    clients = {name: subprocess.Popen([sys.executable, "-c", CLIENT, driver.gcs], env={**base, **env},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
               for name, env in [("no token", {"RAY_AUTH_MODE": "disabled"}),
                                 ("wrong token", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f" * 64}),
                                 ("right token", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})]}
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    outcome = {}
    for name, client in clients.items():
        try:
            out, err = client.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            client.kill()
            out, err = client.communicate()
        outcome[name] = (client.returncode, "CONNECTED" in out, "InvalidAuthToken" in err, err[-1500:])
    assert outcome["right token"][:2] == (0, True), outcome["right token"]
    for name in ("no token", "wrong token"):
        returncode, connected, refused, err = outcome[name]
        assert returncode not in (0, -9) and not connected and refused, (name, err)


def test_token_file_is_readable_by_its_owner_only(driver):
    assert driver.token_file.stat().st_mode & 0o777 == 0o600
    if driver.order == "ray_first":  # the existing token was kept, only its mode tightened
        assert driver.token_file.read_text() == "0123456789abcdef" * 4


def test_ray_does_not_outlive_a_killed_driver(driver):
    """Last test on each driver: SIGKILL it in the middle of a sweep; every process of its tree must be gone within
    KILL_GRACE_S (Ray's own agents linger for 20 s or more)."""
    driver.process.stdin.write("\n")
    driver.process.stdin.flush()
    assert driver.process.stdout.readline().strip() == "sweeping"
    time.sleep(2)  # workers busy with the slow sweep
    tree = driver.tree()[1:]
    assert len(tree) >= 6, tree
    driver.process.send_signal(signal.SIGKILL)
    driver.process.wait()
    gone, alive = psutil.wait_procs(tree, timeout=KILL_GRACE_S)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [(p.pid, p.name()) for p in alive]


def _http(host: str, port: int, method: str, path: str, body: str | None = None,
          token: str | None = None) -> int | str:
    """The status of one HTTP request, or the name of the error when the port does not speak HTTP/1."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection(host.removeprefix("::ffff:"), port, timeout=3)
    try:
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException, socket.timeout) as error:
        return type(error).__name__
    finally:
        connection.close()


REFUSED = textwrap.dedent("""
    import os
    import ray
    import raybt

    class Up(raybt.Strategy):
        def signals(self, data):
            return data.close > data.close.shift(1), data.close < data.close.shift(1)

    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-01-03", "1h")
    installed = ray.__version__
    for version, auth_mode in [("2.53.1", None), (installed, "disabled")]:
        ray.__version__ = version  # what an older installed Ray would report
        if auth_mode:
            os.environ["RAY_AUTH_MODE"] = auth_mode
        try:
            raybt.run_backtests([Up()], data, n_workers=-1, address="local", show_progress=False)
        except RuntimeError as error:
            print("refused:", error)
        print("ray started:", ray.is_initialized())
        ray.shutdown()
""")


def test_no_local_ray_without_token_protection(tmp_path):
    """An older Ray (its job agent runs jobs posted without the token), then token authentication switched off:
    each time raybt starts no Ray and says why."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", REFUSED], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout + done.stderr[-3000:]
    assert lines[0].startswith("refused: raybt starts a local Ray only with Ray >= 2.54 (installed: ray 2.53.1)")
    assert lines[2].startswith("refused: RAY_AUTH_MODE='disabled' in the environment")
    assert lines[1] == lines[3] == "ray started: False"
