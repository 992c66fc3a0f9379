"""Security defaults of a local Ray started by raybt: loopback only, token authentication, nothing unpickled."""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, os, psutil
    import raybt

    class Up(raybt.Strategy):
        def signals(self, data):
            return data.close > data.close.shift(1), data.close < data.close.shift(1)

    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-01-10", "1h")
    raybt.run_backtests([Up()], data, n_workers=2, show_progress=False)
    import ray
    ray_processes = [p for p in psutil.Process().children(recursive=True)]
    listening = sorted({c.laddr.ip for p in ray_processes for c in p.net_connections(kind="inet")
                        if c.status == psutil.CONN_LISTEN}
                       | {c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN})
    print(json.dumps({"node": ray.nodes()[0]["NodeManagerAddress"], "listening": listening,
                      "auth": os.environ.get("RAY_AUTH_MODE"), "n_processes": len(ray_processes)}))
""")


def test_local_ray_listens_on_loopback_only_with_token_auth(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    script = tmp_path / "start.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["node"] == "127.0.0.1"
    assert report["n_processes"] >= 3 and report["listening"]
    assert set(report["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, report["listening"]
    assert report["auth"] == "token"
