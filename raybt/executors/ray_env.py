"""Environment for a Ray that raybt starts itself (kept apart from ``ray_tasks``: it must run before ``import ray``).

Ray reads some settings once, when it is imported, and every process of a cluster must agree on them. For a local
Ray started by raybt:

* every Ray server — GCS, raylet, object manager, workers, agents — listens on 127.0.0.1 only: Ray uses the
  loopback address as its node address when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off, the single-machine mode
  Ray itself uses on macOS and Windows;
* token authentication (``RAY_AUTH_MODE=token``; Ray writes the token to ``~/.ray/auth_token``).

Both are set only when no cluster address is known and Ray has not been imported yet (joining a real cluster must
follow that cluster's settings), and an explicit value in the environment always wins.
"""

from __future__ import annotations

import logging
import os
import sys

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_MODE = "RAY_AUTH_MODE"


def prepare_local_ray(address: str | None) -> None:
    """Before the first ``import ray``: a Ray that raybt will start locally binds to 127.0.0.1 and uses tokens."""
    if address is None and not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
        os.environ.setdefault(AUTH_MODE, "token")
        # `import ray` logs at INFO that notebook widgets are missing; raybt's local Ray is quiet (connect() sets
        # Ray's logging to WARNING for the rest)
        logging.getLogger("ray.widgets").setLevel(logging.WARNING)
