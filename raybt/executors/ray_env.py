"""The safety rules of a local Ray that raybt starts itself, as far as they need no ``import ray``.

A local Ray started by raybt (no ``address``, no ``RAY_ADDRESS``, no Ray initialised yet) must:

* run a Ray with token authentication on every entry point: Ray 2.52 added tokens to GCS and the dashboard head,
  but the dashboard agent's HTTP server (the job agent: ``POST /api/job_agent/jobs/`` runs a shell command) checks
  the token only from Ray 2.54 on, so older versions are refused (:func:`check_ray_version`);
* use token authentication (``RAY_AUTH_MODE=token``): an environment that asks for another mode is refused
  (:func:`require_token_auth`); start Ray yourself (``ray.init()``) before ``run_backtests`` to use other settings;
* keep the token readable by its owner only (:func:`secure_token_file`; Ray writes it with the umask, usually 0644);
* listen on 127.0.0.1 only, unless the user opted in to other machines with
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` (:func:`loopback_only`); the Ray executor checks the node address after
  the start and shuts the Ray down if it is not the loopback address;
* not outlive its driver, whenever the driver stops (during the start included): :func:`start_watchdog` starts
  ``ray_watchdog.py`` before ``ray.init``, which kills the Ray processes once the driver is gone, SIGKILL included
  (Ray's own helpers — dashboard agent, runtime-env agent — linger 20 s or more).

Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` and ``RAY_AUTH_MODE`` when it is imported, so the Ray executor also
refreshes what the driver read (``ray_tasks.start_local_ray``): the rules hold whatever the import order.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIN_RAY_VERSION = (2, 54)
LOOPBACK = "127.0.0.1"
CLUSTER_MODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch: "0" = single machine, every server on loopback
AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"
TOKEN = "RAY_AUTH_TOKEN"
WATCHDOG = Path(__file__).with_name("ray_watchdog.py")


class LocalRayError(RuntimeError):
    """raybt refuses to start a local Ray that would not be safe (too old, no token, not on loopback)."""


def check_ray_version(version: str) -> None:
    """Refuse a Ray older than :data:`MIN_RAY_VERSION`: its job agent runs commands posted without the token."""
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_RAY_VERSION:
        floor = ".".join(map(str, MIN_RAY_VERSION))
        raise LocalRayError(
            f"raybt starts a local Ray only with Ray >= {floor} (installed: ray {version}): older versions let any "
            f"local user submit jobs to the Ray job agent without the authentication token. Upgrade with "
            f"`pip install -U 'ray[default]>={floor}'`, or start Ray yourself (ray.init()) before run_backtests.")


def require_token_auth() -> None:
    """Set ``RAY_AUTH_MODE=token`` for this process and the Ray it starts; refuse any other explicit mode."""
    mode = os.environ.get(AUTH_MODE)
    if mode is not None and mode.lower() != "token":
        raise LocalRayError(
            f"{AUTH_MODE}={mode!r} in the environment: raybt starts a local Ray only with token authentication. "
            f"Unset {AUTH_MODE} (or set it to 'token'), or start Ray yourself (ray.init()) before run_backtests.")
    os.environ[AUTH_MODE] = "token"


def secure_token_file() -> Path | None:
    """Make the token file Ray will read owner-only (0600): create it with a fresh token if it is missing (Ray
    would write it readable by everyone), tighten its mode if it exists. Returns its path (None when the token
    comes from ``RAY_AUTH_TOKEN`` and no file is involved)."""
    if os.environ.get(TOKEN):
        return None
    path = Path(os.environ.get(TOKEN_PATH) or Path.home() / ".ray" / "auth_token")
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL: never write through a file someone else created meanwhile; 0o600 from the first byte on.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))  # 256 bits, the same form as the tokens Ray generates
    return path


def loopback_requested() -> bool:
    """True unless the user opted in to other machines joining (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``/``true``,
    read the way Ray reads it)."""
    return os.environ.get(CLUSTER_MODE, "0").lower() not in ("1", "true")


@contextmanager
def loopback_only() -> Iterator[None]:
    """While Ray starts: Ray's single-machine mode for the processes it spawns (they read it when they import
    Ray); the previous environment afterwards, so a later ``ray.init(address=...)`` to a real cluster is
    unaffected."""
    previous = os.environ.get(CLUSTER_MODE)
    os.environ[CLUSTER_MODE] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[CLUSTER_MODE]
        else:
            os.environ[CLUSTER_MODE] = previous


def start_watchdog() -> subprocess.Popen:
    """Start the process that kills the local Ray this process is about to start, once this process is gone.

    Started before ``ray.init``, it covers every moment of the start: it finds the Ray by its session directory
    (see :mod:`raybt.executors.ray_watchdog`). It runs in a session of its own (a Ctrl-C in the terminal does not
    reach it) with no inherited pipes (a caller reading the driver's output does not wait for it), isolated from the
    user's import path (``-I``)."""
    return subprocess.Popen([sys.executable, "-I", str(WATCHDOG), str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
