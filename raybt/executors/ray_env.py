"""Environment for a Ray that raybt starts itself (kept apart from ``ray_tasks``: it must run before ``import ray``).

Ray reads some settings once, when it is imported. For a local Ray started by raybt we want every Ray server — GCS,
raylet, object manager, workers, agents — to listen on 127.0.0.1 only: Ray uses the loopback address as its node
address when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off, the single-machine mode Ray itself uses on macOS and
Windows. It must stay on when joining a real cluster (other nodes must reach this process), so it is set only when
no cluster address is known and Ray has not been imported yet; an explicit value in the environment always wins.
"""

from __future__ import annotations

import os
import sys

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def prepare_local_ray(address: str | None) -> None:
    """Before the first ``import ray``: bind a Ray that raybt will start locally to 127.0.0.1."""
    if address is None and not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
