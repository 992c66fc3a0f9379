"""Shared fixtures: one Ray instance per test session (2 CPUs, no dashboard, a small object store)."""

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """Ray, started once for the whole session; sweeps with n_workers=-1/N join it."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
