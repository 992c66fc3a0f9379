"""glibc's malloc keeps large freed blocks for reuse once a process evaluates a batch (:mod:`raybt._accel.malloc`);
its twin (``RAYBT_PORTABLE=1``) changes nothing. Each case runs in a fresh interpreter: the setting is per process and
cannot be undone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

_CHILD = r"""
import json, resource, sys
import numpy as np
import raybt
from raybt._accel import malloc

def faults_per_cycle():
    # a chunk's stacked signals: two bars x jobs byte arrays of ~17 MB, allocated, written and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        entries = np.ones((1_915, 8_760), dtype=bool)
        exits = np.ones((1_915, 8_760), dtype=bool)
        del entries, exits
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10

faults_per_cycle()  # the heap's first growth is not what is measured
default = faults_per_cycle()
if sys.argv[1] == "sweep":  # set the way a sweep sets it: by evaluating a batch
    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-01-10", "1h", seed=1)
    from raybt.demo import SmaCross
    raybt.run_backtests([SmaCross(fast=3, slow=8)], data, show_progress=False)
elif sys.argv[1] == "call":
    malloc.keep_freed_memory()
applied = malloc._applied
print(json.dumps({"applied": applied, "default": default, "after": faults_per_cycle()}))
"""


def _run_child(how: str, portable: bool) -> dict:
    env = dict(os.environ, RAYBT_PORTABLE="1" if portable else "0")
    done = subprocess.run([sys.executable, "-c", _CHILD, how], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_evaluating_a_batch_makes_the_next_chunks_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    figures = _run_child("sweep", portable=False)
    assert figures["applied"] is True
    # 2 x 16.8 MB of fresh pages fault in again every cycle (~1,000 faults: numpy asks for huge pages where it can);
    # reused heap memory hardly at all
    assert figures["default"] > 500, figures
    assert figures["after"] < figures["default"] / 5, figures


def test_the_portable_twin_leaves_malloc_alone():
    figures = _run_child("call", portable=True)
    assert figures["applied"] is False
    assert figures["after"] > figures["default"] / 2, figures


def test_importing_raybt_changes_nothing_until_a_batch_runs():
    figures = _run_child("import", portable=False)
    assert figures["applied"] is None
    assert figures["after"] > figures["default"] / 2, figures

