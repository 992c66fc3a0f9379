"""Result stores: batched Parquet checkpoints on any filesystem pyarrow knows, or memory.

A checkpoint directory holds::

    manifest.json                          versions and the settings of every run that wrote here
    parts/part-<time ns>-<random>.parquet  result rows, one file per flush, written atomically
    quarantine/                            parts that could not be read, moved aside (their jobs rerun)

Guarantees:

* **Atomic parts.** A local part is written to a hidden temporary file, fsync'ed, renamed into place and the folder
  fsync'ed: a kill at any moment leaves either the whole part or none of it (leftover temporary files are ignored
  and removed on the next open). Object stores (``s3://``, ``gs://``) publish an object only when its upload
  completes, which gives the same guarantee: a part is serialized in memory first and sent in one write, and an
  upload that fails or is interrupted by an exception is deleted again.
* **Idempotent.** Rows are keyed by job key; a part written twice, or a job stored by two runs, reads back as one row
  (the newest part wins).
* **Never unpickled.** Parts are plain Parquet (page checksums on), readable by pandas, pyarrow or DuckDB without
  raybt. A part that cannot be read is moved to ``quarantine/`` with a warning, and its jobs count as not done.

The store knows keys and Parquet, nothing of strategies.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

KEY_COLUMN = "key"
ERROR_COLUMN = "error"
_PARTS, _QUARANTINE, _MANIFEST = "parts", "quarantine", "manifest.json"
_TMP_PREFIX = ".tmp-"


class CheckpointWarning(UserWarning):
    """A checkpoint part could not be read and was quarantined."""


class MemoryStore:
    """Keeps result tables in memory (``checkpoint_dir=None``): same interface as :class:`CheckpointStore`."""

    location = None

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []

    def done_keys(self, rerun_errors: bool = False) -> np.ndarray:
        return _keys_of([t.select(_present(t, (KEY_COLUMN, ERROR_COLUMN))) for t in self._tables], rerun_errors)

    def write(self, table: pa.Table) -> None:
        self._tables.append(table)

    def read(self, keys: np.ndarray | None = None) -> pd.DataFrame:
        return _combine(self._tables, keys)

    def record_run(self, info: dict[str, Any]) -> None:
        """Nothing to record in memory."""


class CheckpointStore:
    """Parquet parts under a local path or a filesystem URI (``s3://bucket/run``, ``gs://…``, ``file://…``)."""

    def __init__(self, location: str | os.PathLike[str]):
        self.location = str(location)
        self._fs, root = _filesystem(self.location)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._root = root.rstrip("/")
        self._parts = f"{self._root}/{_PARTS}"
        self._fs.create_dir(self._parts, recursive=True)
        self._remove_leftover_temporaries()

    # ------------------------------------------------------------------------------------------- reading

    def part_paths(self) -> list[str]:
        """Finished parts, oldest first."""
        infos = self._fs.get_file_info(pafs.FileSelector(self._parts, allow_not_found=True))
        names = sorted(i.path for i in infos if i.type == pafs.FileType.File
                       and os.path.basename(i.path).startswith("part-") and i.path.endswith(".parquet"))
        return names

    def done_keys(self, rerun_errors: bool = False) -> np.ndarray:
        """Keys of stored jobs (reads only the key and error columns). With ``rerun_errors`` rows that failed
        don't count as done. Unreadable parts are quarantined."""
        tables = []
        for path in self.part_paths():
            table = self._read_part(path, columns=[KEY_COLUMN, ERROR_COLUMN])
            if table is not None:
                tables.append(table)
        return _keys_of(tables, rerun_errors)

    def read(self, keys: np.ndarray | None = None) -> pd.DataFrame:
        """All stored rows (the newest row per key), optionally only those whose key is in ``keys``."""
        tables = [t for t in (self._read_part(p) for p in self.part_paths()) if t is not None]
        return _combine(tables, keys)

    def _read_part(self, path: str, columns: list[str] | None = None) -> pa.Table | None:
        try:
            with self._fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle, page_checksum_verification=True)
                present = [c for c in columns if c in parquet.schema_arrow.names] if columns else None
                return parquet.read(columns=present)
        except (OSError, pa.ArrowException) as exc:
            self._quarantine(path, exc)
            return None

    def _quarantine(self, path: str, reason: Exception) -> None:
        target_dir = f"{self._root}/{_QUARANTINE}"
        self._fs.create_dir(target_dir, recursive=True)
        target = f"{target_dir}/{os.path.basename(path)}"
        self._fs.move(path, target)
        warnings.warn(f"checkpoint part {path} is unreadable ({type(reason).__name__}: {reason}); moved to "
                      f"{target}, its jobs will run again", CheckpointWarning, stacklevel=3)

    # ------------------------------------------------------------------------------------------- writing

    def write(self, table: pa.Table) -> str:
        """Write one part atomically; returns its path."""
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        final = f"{self._parts}/{name}"
        if self._local:
            temporary = f"{self._parts}/{_TMP_PREFIX}{name}"
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle, write_page_checksum=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            _fsync_dir(self._parts)
        else:
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, write_page_checksum=True)
            _upload_new_object(self._fs, final, sink.getvalue())
        return final

    def record_run(self, info: dict[str, Any]) -> None:
        """Append a run's description to ``manifest.json`` (rewritten atomically)."""
        path = f"{self._root}/{_MANIFEST}"
        manifest: dict[str, Any] = {"format": 1, "runs": []}
        try:
            with self._fs.open_input_stream(path) as handle:
                manifest = json.loads(handle.read().decode())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            warnings.warn(f"{path} is unreadable ({exc}); starting a new manifest", CheckpointWarning, stacklevel=2)
        manifest.setdefault("runs", []).append({"started": datetime.now(timezone.utc).isoformat(), **info})
        payload = json.dumps(manifest, indent=2, default=str).encode()
        if self._local:
            temporary = f"{self._root}/{_TMP_PREFIX}{_MANIFEST}"
            with open(temporary, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        else:
            with self._fs.open_output_stream(path) as handle:
                handle.write(payload)

    def _remove_leftover_temporaries(self) -> None:
        if not self._local:
            return
        for folder in (self._parts, self._root):
            for entry in os.scandir(folder):
                if entry.name.startswith(_TMP_PREFIX):
                    os.unlink(entry.path)


def recorded_runs(location: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The runs ``manifest.json`` records (oldest first), read without opening or changing the store; ``[]`` when
    there is no readable manifest of the expected shape."""
    fs, root = _filesystem(str(location))
    try:
        with fs.open_input_stream(f"{root.rstrip('/')}/{_MANIFEST}") as handle:
            manifest = json.loads(handle.read().decode())
    except (OSError, ValueError):
        return []
    runs = manifest.get("runs") if isinstance(manifest, dict) else None
    return [run for run in runs if isinstance(run, dict)] if isinstance(runs, list) else []


# ---------------------------------------------------------------------------------------------------- helpers

def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
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
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _present(table: pa.Table, columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c in table.column_names]


def _keys_of(tables: list[pa.Table], rerun_errors: bool) -> np.ndarray:
    """Done keys as a sorted unique bytes array. A key counts as done if its newest row is kept: with
    ``rerun_errors`` a key whose newest row has an error is not done."""
    if not tables:
        return np.array([], dtype="S24")
    keys = np.concatenate([t.column(KEY_COLUMN).to_numpy(zero_copy_only=False).astype("S24") for t in tables])
    if rerun_errors:
        failed = np.concatenate([
            (t.column(ERROR_COLUMN).is_valid().to_numpy(zero_copy_only=False) if ERROR_COLUMN in t.column_names
             else np.zeros(len(t), dtype=bool)) for t in tables])
        newest_first = keys[::-1]
        _, first = np.unique(newest_first, return_index=True)
        keep = ~failed[::-1][first]
        return np.sort(newest_first[first][keep])
    return np.unique(keys)


def _combine(tables: list[pa.Table], keys: np.ndarray | None) -> pd.DataFrame:
    """Concatenate parts (columns unified: a parameter missing from a part is null there), keep the newest row per
    key, optionally restrict to ``keys``."""
    if not tables:
        return pd.DataFrame()
    table = pa.concat_tables(tables, promote_options="permissive")
    frame = table.to_pandas()
    frame = frame.drop_duplicates(subset=KEY_COLUMN, keep="last")
    if keys is not None:
        frame = frame[np.isin(frame[KEY_COLUMN].to_numpy().astype("S24"), keys)]
    return frame.reset_index(drop=True)
