"""The cyclic garbage collector is paused while a worker rebuilds a batch's strategies (:mod:`raybt._accel.collector`);
its twin (``RAYBT_PORTABLE=1``) leaves the collector alone."""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

import raybt.batch
from raybt._accel import PORTABLE
from raybt._accel.collector import cyclic_gc_paused
from raybt.batch import Batch
from raybt.demo import SmaCross

fast_mode_only = pytest.mark.skipif(PORTABLE, reason="the twin does not pause the collector")


@pytest.fixture
def collections() -> list[int]:
    """The generation of every collection that runs during the test."""
    seen: list[int] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(record)
    yield seen
    gc.callbacks.remove(record)


def _pickled_batch(n: int) -> bytes:
    strategies = [SmaCross(fast=2 + i % 100, slow=200 + i // 100) for i in range(n)]
    return pickle.dumps(Batch(np.arange(n), strategies, [None] * n, [None] * n))


@fast_mode_only
def test_a_pause_turns_the_collector_off_and_back_on_also_nested_and_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(KeyError):
        with cyclic_gc_paused():
            assert not gc.isenabled()
            with cyclic_gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner pause ended, the outer one not
            raise KeyError("inside")
    assert gc.isenabled()


@fast_mode_only
def test_a_collector_the_user_turned_off_stays_off() -> None:
    gc.disable()
    try:
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


@fast_mode_only
def test_pauses_overlapping_in_two_threads_resume_the_collector_only_when_both_ended() -> None:
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with cyclic_gc_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with cyclic_gc_paused():
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # this thread's pause ended, the other's not
    release.set()
    thread.join(10)
    assert gc.isenabled()


@fast_mode_only
def test_rebuilding_a_batch_runs_no_collection_where_it_ran_them_before(collections: list[int],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blob = _pickled_batch(20_000)
    gc.collect()
    collections.clear()
    rebuilt = pickle.loads(blob)
    assert len(collections) <= 1 and gc.isenabled()  # at most the young one the first allocation after it runs
    assert [s.params for s in rebuilt.strategies[:3]] == [{"fast": 2, "slow": 200}, {"fast": 3, "slow": 200},
                                                          {"fast": 4, "slow": 200}]
    monkeypatch.setattr(raybt.batch, "cyclic_gc_paused", contextlib.nullcontext)  # the code before the pause
    del rebuilt
    gc.collect()
    collections.clear()
    pickle.loads(blob)
    assert len(collections) > 10  # 20,000 new objects: one young collection per 700 allocations or so


def test_the_portable_twin_leaves_the_collector_on() -> None:
    code = ("import gc; from raybt._accel.collector import cyclic_gc_paused\n"
            "with cyclic_gc_paused(): print(gc.isenabled())")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RAYBT_PORTABLE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
