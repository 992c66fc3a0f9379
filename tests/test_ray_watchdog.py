"""How the watchdog finds a local Ray's processes (raybt/executors/ray_watchdog.py), without Ray: sleeping processes
stand in for Ray's. That nothing of a Ray outlives a SIGKILLed driver is in test_security, and a driver stopped
while Ray starts in test_ray_orphans."""

import os
import re
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
        found = ray_watchdog._with_descendants([psutil.Process(parent.pid), gone], ray_watchdog._children_by_parent())
        assert sorted(p.pid for p in found) == sorted([parent.pid, grandchild])
        assert len(scans) == 1
    finally:
        for process in (parent, bystander):
            process.kill()
            process.wait()
        time.sleep(0.1)
        if psutil.pid_exists(grandchild):
            psutil.Process(grandchild).kill()


HOLDS = "import sys, time; handle = open(sys.argv[1], 'w'); print('open', flush=True); time.sleep(60)"


def test_a_ray_process_is_found_by_its_drivers_session_directory_even_as_an_orphan(tmp_path):
    """An orphan (no relation to the driver left) holding a log of the driver's session is found; one holding a
    log of another driver's session, one started before the watchdog and the watchdog itself are not."""
    driver = 4242
    ours = tmp_path / "ray" / f"session_2026-12-07_14-49-39_650692_{driver}" / "logs"
    theirs = tmp_path / "ray" / f"session_2026-12-07_14-49-39_650692_{driver}1" / "logs"
    for folder in (ours, theirs):
        folder.mkdir(parents=True)

    def holding(path):
        process = subprocess.Popen([sys.executable, "-c", HOLDS, str(path)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "open\n"
        return process

    older = holding(ours / "old.log")  # an earlier process of that name: started before the watchdog
    # the watchdog's own start, on psutil's clock (creation times count clock ticks since boot, not time.time())
    since = psutil.Process(older.pid).create_time() + 0.05
    time.sleep(0.1)
    agent, bystander = holding(ours / "dashboard_agent.log"), holding(theirs / "dashboard_agent.log")
    try:
        found = ray_watchdog._in_session(ray_watchdog._session_pattern(driver), since)
        assert [p.pid for p in found] == [agent.pid]
        assert not ray_watchdog._holds_session_file(psutil.Process(os.getpid()), re.compile("."), 0.0)  # itself
    finally:
        for process in (older, agent, bystander):
            process.kill()
            process.wait()
