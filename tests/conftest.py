"""Shared fixtures: one local Ray for the session (2 CPUs, no dashboard, a small object store)."""

import os

import pytest

# Ray reads its authentication mode at import, and every process of a cluster must agree: token authentication,
# set before any test module imports ray (raybt's Ray executor makes the same choice).
os.environ.setdefault("RAY_AUTH_MODE", "token")


@pytest.fixture()
def ray_cluster():
    """The session's local Ray (2 CPUs, no dashboard, 256 MiB object store), started on first use and kept for
    every later test; sweeps with n_workers=-1/N join it. (tests/test_cluster.py shuts it down to start its own
    multi-node clusters; the next test that needs it starts it again.)"""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
                 log_to_driver=False)
    return ray
