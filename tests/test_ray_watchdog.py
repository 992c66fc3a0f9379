"""The watchdog's record of a local Ray's processes (raybt/executors/ray_watchdog.py), without Ray: a process tree
of sleeping children stands in for Ray's. That nothing of a Ray outlives a SIGKILLed driver is in test_security."""

import subprocess
import sys
import time

import psutil

from raybt.executors import ray_watchdog

TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_descendants_are_found_in_one_pass_over_the_process_table(monkeypatch):
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        grandchild = int(parent.stdout.readline())
        scans = []
        original = psutil.process_iter

        def counted(*args, **kwargs):
            scans.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(psutil, "process_iter", counted)
        monkeypatch.setattr(psutil.Process, "children", lambda *a, **k: (_ for _ in ()).throw(AssertionError(
            "one scan per recorded process")))
        gone = psutil.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        found = ray_watchdog._with_descendants([psutil.Process(parent.pid), gone])
        assert sorted(p.pid for p in found) == sorted([parent.pid, grandchild])
        assert len(scans) == 1
    finally:
        for process in (parent, bystander):
            process.kill()
            process.wait()
        time.sleep(0.1)
        if psutil.pid_exists(grandchild):
            psutil.Process(grandchild).kill()
