"""Files the checkpoint store writes, all or nothing: on a local folder (a hidden temporary named after its writer,
fsynced, renamed into place, the folder fsynced) or on an object store (one upload that publishes the object whole
or not at all); and the clean-up of temporaries a dead writer left behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.fs as pafs

_TMP_PREFIX = ".tmp-"


def _writer_tag() -> str:
    """``<host digest>-<pid>-<process start, ms>``: who writes a temporary, enough to tell later whether that
    process still runs (the start time tells a reused process id apart)."""
    host = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()
    return f"{host}-{os.getpid()}-{round(psutil.Process().create_time() * 1000)}"


def _write_locally(folder: str, name: str, write: Callable[[Any], Any]) -> None:
    """Create or replace ``folder/name`` atomically: ``write(handle)`` into a hidden temporary named after its
    writer (:func:`_writer_tag`), fsync it, rename it into place, fsync the folder. If anything fails before the
    rename (a full disk), the temporary is deleted again and nothing changed."""
    temporary = f"{folder}/{_TMP_PREFIX}{_writer_tag()}-{uuid.uuid4().hex[:8]}-{name}"
    try:
        with open(temporary, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, f"{folder}/{name}")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_dir(folder)


def _remove_dead_writers_temporaries(folders: Iterable[str]) -> None:
    """Delete temporaries whose writer ran on this host and is dead (no process with its id and start time).
    Temporaries of live writers, of other hosts (a shared mount) and of unknown form are left alone."""
    host = _writer_tag().split("-")[0]
    for folder in folders:
        for entry in os.scandir(folder):
            if not entry.name.startswith(_TMP_PREFIX):
                continue
            fields = entry.name[len(_TMP_PREFIX):].split("-")
            if len(fields) < 3 or fields[0] != host or not fields[1].isdigit() or not fields[2].isdigit():
                continue
            try:
                alive = abs(psutil.Process(int(fields[1])).create_time() * 1000 - int(fields[2])) < 10
            except psutil.NoSuchProcess:
                alive = False
            if not alive:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass  # another writer removed it first


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``location`` (a path or a pyarrow filesystem URI) and the root folder's path in it,
    without a trailing slash (callers append ``/name``)."""
    if "://" in location:
        fs, root = pafs.FileSystem.from_uri(location)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(location)


def _upload_new_object(fs: pafs.FileSystem, path: str, payload: pa.Buffer) -> None:
    """Upload ``payload`` as the new object ``path``, all of it or nothing.

    An object store publishes an object when its output stream is closed, and pyarrow closes the stream (publishing
    what was written so far) even when the ``with`` body raises. So the whole payload is serialized before the
    stream opens and sent in one write, and if anything fails or is interrupted before the upload returns, the
    object is deleted again (``path`` is a fresh unique name: nothing else is ever there). A killed process never
    completes its upload, so nothing is published."""
    try:
        with fs.open_output_stream(path) as handle:
            handle.write(payload)
    except BaseException:
        try:
            fs.delete_file(path)
        except OSError:
            pass  # never published
        raise


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (POSIX: fsync the directory). Skipped where a directory cannot be opened:
    on Windows ``os.open`` on a directory raises PermissionError, and NTFS makes a rename durable itself."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except PermissionError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
