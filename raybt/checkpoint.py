"""Result stores: batched Parquet checkpoints on any filesystem pyarrow knows, or memory.

A checkpoint directory holds::

    manifest.json                          versions and the settings of every run that wrote here
    parts/part-<time ns>-<random>.parquet  result rows, one file per flush, written atomically
    quarantine/                            parts a writer found damaged or foreign, moved aside (their jobs rerun)

A store is opened either to read (``CheckpointStore(dir)``: ``load_results``, ``raybt results``, exploring while a
sweep runs) or to write (``CheckpointStore(dir, writer=True)``: a sweep). Guarantees:

* **Readers never modify the store.** Opening and reading create, move and delete nothing, so a directory can be
  read while sweeps write it, and read-only copies (snapshots, read-only mounts) can be read. A reader skips a part
  it cannot use with a :class:`CheckpointWarning` naming the file and why.
* **Atomic parts.** A local part is written to a hidden temporary file, fsync'ed, renamed into place and the folder
  fsync'ed: a kill at any moment leaves either the whole part or none of it. A temporary's name carries its
  writer's host, process id and process start time; a writer opening the store deletes only temporaries of writers
  on this host that are provably dead (no process with that id and start time), never another live writer's, and a
  failed write deletes its own. Readers ignore temporaries. Object stores (``s3://``, ``gs://``) publish an object
  only when its upload completes, which gives the same guarantee: a part is serialized in memory first and sent in
  one write, and an upload that fails or is interrupted by an exception is deleted again.
* **Several writers at once are supported.** Two sweeps may write the same directory at the same time: part and
  temporary names are unique per writer, rows are keyed, and a job stored by both reads back as one row (the newest
  part wins). Local ``manifest.json`` updates are serialised by an OS file lock (``manifest.json.lock``, released
  by the OS when its holder dies, so a killed writer cannot leave it stuck); object stores have no such lock, and
  two runs starting at the same moment may each rewrite the manifest without the other's entry (the manifest
  describes runs; no row is ever lost that way).
* **Only the schema raybt writes is read.** A part is used only if its Arrow schema (read from the footer before any
  data) has every column of :data:`RESULT_COLUMNS` with its type and otherwise only plain scalar columns (bool,
  integer, floating, string, timestamp, null; parameters and other columns raybt adds), and its keys are whole. A
  part that is damaged (a checksum or decoding error), foreign (another schema or results version, a stray Parquet
  file, a binary, nested or extension column such as a pickled-object column) is never deserialised further: a
  writer moves it to ``quarantine/`` with a warning naming the file and runs its jobs again, a reader skips it.
  Nothing in a checkpoint is ever unpickled.
* **Idempotent.** Rows are keyed by job key; a part written twice, or a job stored by two runs, reads back as one row
  (the newest part wins).
* **Exact parameters.** Columns beyond :data:`RESULT_COLUMNS` (parameters) read back with their Python values: a
  column holding one type in every row keeps its native dtype (int64, float64, bool, str, datetime); a column with
  missing values or with different types in different parts (two strategy classes sharing a parameter name, a
  parameter annotated ``int | str``) comes back as ``object`` dtype holding the exact values (``int``, ``float``,
  ``bool``, ``str``, ``None`` where missing — never NaN for a missing int).

The store knows keys, the column schema and Parquet, nothing of strategies.
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
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from filelock import FileLock

from raybt._keys import KEY_DTYPE, KEY_LENGTH, contains, key_array, key_bytes, key_set, newest_done
from raybt._storage import _filesystem, _remove_dead_writers_temporaries, _upload_new_object, _write_locally
from raybt.metrics import METRIC_NAMES
from raybt.result_schema import (ADDED_COLUMNS, ERROR_COLUMN, KEY_COLUMN, RESULT_COLUMNS, is_string_type,
                                 schema_problem, with_added_columns, with_added_fields)

_PARTS, _QUARANTINE, _MANIFEST = "parts", "quarantine", "manifest.json"


class CheckpointWarning(UserWarning):
    """A checkpoint part could not be used (damaged or foreign): skipped by a reader, quarantined by a writer; or a
    read found fewer rows than it was asked for."""


class CheckpointError(RuntimeError):
    """The store could not keep a sweep's rows (they kept disappearing)."""


class _UnusablePart(Exception):
    """A part that is damaged or foreign (the message says which and why)."""


# ---------------------------------------------------------------------------------------------------- memory

class MemoryStore:
    """Keeps result tables in memory (``checkpoint_dir=None``): same interface as :class:`CheckpointStore`."""

    location = None

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []

    def done_keys(self, rerun_errors: bool = False) -> np.ndarray:
        return newest_done([_done_of(t) for t in self._tables], rerun_errors)

    def write(self, table: pa.Table) -> None:
        self._tables.append(table)

    def read(self, keys: np.ndarray | None = None) -> pd.DataFrame:
        return _combine([(t, _exact_parameters(t)) for t in self._tables], None if keys is None else key_set(keys))

    def record_run(self, info: dict[str, Any]) -> None:
        """Nothing to record in memory."""

    def scan(self, columns: list[str] | None = None, filter: pc.Expression | None = None,
             keys: np.ndarray | None = None) -> pa.Table:
        """Like :meth:`CheckpointStore.scan`, over the tables in memory."""
        return _scan([(t.column(KEY_COLUMN), t.schema, lambda schema, t=t: ds.dataset(_conform(t, schema)))
                      for t in self._tables], columns, filter, keys)


# ---------------------------------------------------------------------------------------------------- files

class CheckpointStore:
    """Parquet parts under a local path or a filesystem URI (``s3://bucket/run``, ``gs://…``, ``file://…``).

    ``writer=False`` (reading) never creates, moves or deletes anything; ``writer=True`` (a sweep) creates the
    folders, deletes temporaries of dead writers on this host and quarantines unusable parts."""

    def __init__(self, location: str | os.PathLike[str], *, writer: bool = False):
        self.location = str(location)
        self.writer = writer
        self._fs, self._root = _filesystem(self.location)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._parts = f"{self._root}/{_PARTS}"
        self._skipped: dict[str, str] = {}  # part path -> why it was not used (by this store)
        # part path -> ((size, mtime ns) when it was read whole and found usable, or written by this store; its
        # keys and which rows failed, see _done_of)
        self._verified_keys: dict[str, tuple[tuple[int, int], tuple[np.ndarray, np.ndarray]]] = {}
        if writer:
            self._fs.create_dir(self._parts, recursive=True)
            if self._local:
                _remove_dead_writers_temporaries((self._parts, self._root))

    # ------------------------------------------------------------------------------------------- reading

    def part_paths(self) -> list[str]:
        """Candidate parts, oldest first: every file in ``parts/`` except hidden ones (temporaries)."""
        return [info.path for info in self._part_infos()]

    def _part_infos(self) -> list[pafs.FileInfo]:
        infos = self._fs.get_file_info(pafs.FileSelector(self._parts, allow_not_found=True))
        parts = (i for i in infos if i.type == pafs.FileType.File and not os.path.basename(i.path).startswith("."))
        return sorted(parts, key=lambda i: i.path)

    def done_keys(self, rerun_errors: bool = False) -> np.ndarray:
        """Keys of stored jobs. Every part is read whole (its page checksums verified), so a part that cannot be
        read back completely does not count: its jobs are not done. With ``rerun_errors`` rows that failed don't
        count as done either. A part this store has already read whole is not read again while its size and
        modification time are unchanged (parts are never rewritten: a change is damage or a replacement, and the
        part is then read whole again); nor is a part this store wrote, while its size and modification time are
        those found right after writing it. So a sweep's second look (the lost-jobs check) reads no part unless one
        changed (or vanished: its rows are then lost)."""
        self._skipped = {}
        tables = []
        for info in self._part_infos():
            stamp = (info.size, info.mtime_ns)
            known = self._verified_keys.get(info.path)
            if known is None or known[0] != stamp:
                part = self._usable_part(info.path, quarantine=self.writer)
                if part is None:
                    self._verified_keys.pop(info.path, None)
                    continue
                known = self._verified_keys[info.path] = (stamp, _done_of(part[0]))
            tables.append(known[1])
        return newest_done(tables, rerun_errors)

    def read(self, keys: np.ndarray | None = None) -> pd.DataFrame:
        """All stored rows (the newest row per key), optionally only those whose key is in ``keys``; warns when some
        of ``keys`` have no row, saying how many and which parts were not used. Never modifies the store, also when
        opened as a writer (unusable parts are skipped; a writer quarantines them in :meth:`done_keys`)."""
        wanted = None if keys is None else key_set(keys)
        frame = _combine(self._usable_parts(quarantine=False), wanted)
        if wanted is not None:
            found = key_set(frame[KEY_COLUMN].to_numpy().astype(KEY_DTYPE) if len(frame) else [])
            n_missing = int(np.count_nonzero(~contains(found, wanted)))
            if n_missing:
                why = "; ".join(f"{path}: {reason}" for path, reason in self._skipped.items()) or "no part holds them"
                warnings.warn(f"{n_missing} of {len(wanted)} jobs have no row in {self.location} "
                              f"({why}); run the sweep again to compute them", CheckpointWarning, stacklevel=3)
        return frame

    def scan(self, columns: list[str] | None = None, filter: pc.Expression | None = None,
             keys: np.ndarray | None = None) -> pa.Table:
        """The newest row of every stored key (optionally only keys in ``keys``) that matches ``filter``, with only
        ``columns`` (and ``key``) read; never modifies the store. Each part's schema is checked and its key column
        read in full first (unusable parts are skipped with a warning, as by :meth:`read`); the rest is read with
        Parquet column projection and predicate pushdown. See :func:`_scan` for the rules."""
        self._skipped = {}
        sources = []
        for path in self.part_paths():
            try:
                schema, part_keys = self._part_keys(path)
            except FileNotFoundError:
                warnings.warn(f"checkpoint part {path} disappeared while reading (quarantined by a writer?); skipped",
                              CheckpointWarning, stacklevel=3)
                continue
            except _UnusablePart as problem:
                self._set_aside(path, str(problem), quarantine=False)
                continue
            sources.append((part_keys, schema, lambda unified, path=path: ds.dataset(
                path, schema=unified, filesystem=self._fs, format=_CHECKED_PARQUET)))
        return _scan(sources, columns, filter, keys)

    def _part_keys(self, path: str) -> tuple[pa.Schema, pa.ChunkedArray]:
        """A part's schema (checked as :meth:`_read_part` checks it, before any column is decoded) and its keys."""
        schema, table = self._checked_read(path, columns=[KEY_COLUMN])
        return schema, table.column(KEY_COLUMN)

    def _checked_read(self, path: str, columns: list[str] | None = None) -> tuple[pa.Schema, pa.Table]:
        """The part at ``path`` (only ``columns``, if given) with its schema, checked against the schema raybt
        writes *before* any column is decoded (so a foreign column type is never deserialised), its page checksums
        verified and its keys checked. Raises :class:`_UnusablePart` saying why a part cannot be used."""
        try:
            with self._fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle, page_checksum_verification=True)
                problem = schema_problem(parquet.schema_arrow)
                if problem is not None:
                    raise _UnusablePart(f"foreign: {problem}")
                schema, table = parquet.schema_arrow, parquet.read(columns=columns)
        except (FileNotFoundError, _UnusablePart):
            raise
        except Exception as exc:  # a damaged footer surfaces as any of OSError, ArrowException, UnicodeDecodeError…
            raise _UnusablePart(f"unreadable: {type(exc).__name__}: {exc}") from None
        keys = table.column(KEY_COLUMN)
        if keys.null_count or (len(keys) and not pc.all(pc.equal(pc.utf8_length(keys), KEY_LENGTH)).as_py()):
            raise _UnusablePart(f"foreign: its {KEY_COLUMN!r} column holds values that are not {KEY_LENGTH}-character "
                                f"job keys")
        return schema, table

    def manifest(self) -> dict[str, Any]:
        """The contents of ``manifest.json`` (no runs when there is none yet); read-only."""
        return self._read_manifest(f"{self._root}/{_MANIFEST}")

    def _usable_parts(self, quarantine: bool) -> Iterable[tuple[pa.Table, dict[str, list]]]:
        """Each usable part (see :meth:`_read_part`); unusable ones are quarantined or skipped, with a warning."""
        self._skipped = {}
        for path in self.part_paths():
            part = self._usable_part(path, quarantine)
            if part is not None:
                yield part

    def _usable_part(self, path: str, quarantine: bool) -> tuple[pa.Table, dict[str, list]] | None:
        """The part at ``path`` (:meth:`_read_part`), or None if it vanished or cannot be used (then quarantined or
        skipped, with a warning)."""
        try:
            return self._read_part(path)
        except FileNotFoundError:
            self._skipped[path] = "removed while reading (quarantined by a writer?)"
            warnings.warn(f"checkpoint part {path} disappeared while reading (quarantined by a writer?); "
                          f"skipped", CheckpointWarning, stacklevel=5)
        except _UnusablePart as problem:
            self._set_aside(path, str(problem), quarantine)
        return None

    def _read_part(self, path: str) -> tuple[pa.Table, dict[str, list]]:
        """The whole part at ``path``, checked (:meth:`_checked_read`), with the exact values of its parameter
        columns stored as text (:func:`_exact_parameters`)."""
        _, table = self._checked_read(path)
        table = with_added_columns(table)
        try:
            return table, _exact_parameters(table)
        except ValueError as exc:
            raise _UnusablePart(f"foreign: its 'parameters' column does not hold JSON objects ({exc})") from None

    def _set_aside(self, path: str, reason: str, quarantine: bool) -> None:
        """Move an unusable part to ``quarantine/``, or leave it where it is (a reader)."""
        self._skipped[path] = reason
        if not quarantine:
            warnings.warn(f"checkpoint part {path} is {reason}; skipped (a sweep writing here will move it to "
                          f"{_QUARANTINE}/ and run its jobs again)", CheckpointWarning, stacklevel=5)
            return
        target_dir = f"{self._root}/{_QUARANTINE}"
        self._fs.create_dir(target_dir, recursive=True)
        target = f"{target_dir}/{os.path.basename(path)}"
        if self._fs.get_file_info(target).type != pafs.FileType.NotFound:
            target = f"{target}.{uuid.uuid4().hex[:8]}"
        try:
            self._fs.move(path, target)
        except FileNotFoundError:  # another writer moved it first
            return
        warnings.warn(f"checkpoint part {path} is {reason}; moved to {target}, its jobs will run again",
                      CheckpointWarning, stacklevel=5)

    # ------------------------------------------------------------------------------------------- writing

    def write(self, table: pa.Table) -> str:
        """Write one part atomically; returns its path. The table must have the schema raybt writes."""
        self._check_writer()
        problem = schema_problem(table.schema)
        if problem is not None:
            raise ValueError(f"not a result table: {problem}")
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        final = f"{self._parts}/{name}"
        options = _parquet_options(table)
        if self._local:
            _write_locally(self._parts, name, lambda handle: pq.write_table(table, handle, **options))
        else:
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, **options)
            _upload_new_object(self._fs, final, sink.getvalue())
        # Known as read whole (see done_keys): the sweep's look for lost rows then reads only parts that changed
        info = self._fs.get_file_info(final)
        if info.type == pafs.FileType.File:
            self._verified_keys[info.path] = ((info.size, info.mtime_ns), _done_of(table))
        return final

    def record_run(self, info: dict[str, Any]) -> None:
        """Append a run's description to ``manifest.json`` (rewritten atomically; locally under a file lock, so
        concurrent writers do not lose each other's entries)."""
        self._check_writer()
        if self._local:
            with FileLock(f"{self._root}/{_MANIFEST}.lock"):
                self._append_run(info)
        else:
            self._append_run(info)

    def _append_run(self, info: dict[str, Any]) -> None:
        path = f"{self._root}/{_MANIFEST}"
        manifest = self._read_manifest(path)
        manifest["runs"].append({"started": datetime.now(timezone.utc).isoformat(), **info})
        payload = json.dumps(manifest, indent=2, default=str).encode()
        if self._local:
            _write_locally(self._root, _MANIFEST, lambda handle: handle.write(payload))
        else:
            with self._fs.open_output_stream(path) as handle:
                handle.write(payload)

    def _read_manifest(self, path: str) -> dict[str, Any]:
        """The manifest, or a new one if there is none; one that cannot be read or has the wrong shape (not an
        object with a ``runs`` list of objects) is replaced, with a warning."""
        try:
            with self._fs.open_input_stream(path) as handle:
                manifest = json.loads(handle.read().decode())
        except FileNotFoundError:
            return {"format": 1, "runs": []}
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({exc})"
        else:
            if (isinstance(manifest, dict) and isinstance(manifest.get("runs", []), list)
                    and all(isinstance(run, dict) for run in manifest.get("runs", []))):
                manifest.setdefault("runs", [])
                return manifest
            problem = "not a raybt manifest (expected a JSON object with a 'runs' list of objects)"
        warnings.warn(f"{path} is {problem}; starting a new manifest", CheckpointWarning, stacklevel=4)
        return {"format": 1, "runs": []}

    def _check_writer(self) -> None:
        if not self.writer:
            raise PermissionError(f"checkpoint store {self.location} was opened for reading; open it with "
                                  f"writer=True to write")


def recorded_runs(location: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The runs ``manifest.json`` records (oldest first), read without opening or changing the store; ``[]`` when
    there is no readable manifest of the expected shape."""
    fs, root = _filesystem(str(location))
    try:
        with fs.open_input_stream(f"{root}/{_MANIFEST}") as handle:
            manifest = json.loads(handle.read().decode())
    except (OSError, ValueError):
        return []
    runs = manifest.get("runs") if isinstance(manifest, dict) else None
    return [run for run in runs if isinstance(run, dict)] if isinstance(runs, list) else []


# ---------------------------------------------------------------------------------------------------- helpers

_DISTINCT_VALUED = frozenset({KEY_COLUMN, "strategy_id", *METRIC_NAMES, "duration_s"})
"""Columns whose values rarely repeat within a part: Parquet dictionary encoding would hash every value only to
fall back to plain encoding, so they are written plain (the other columns repeat: ranges, symbols, parameters)."""


def _parquet_options(table: pa.Table) -> dict[str, Any]:
    """Options of :func:`pyarrow.parquet.write_table` for a part: page checksums (verified on every read) and
    dictionary encoding where values repeat (:data:`_DISTINCT_VALUED`). Encodings change neither the schema nor the
    values read back."""
    return {"write_page_checksum": True,
            "use_dictionary": [name for name in table.column_names if name not in _DISTINCT_VALUED]}


def _done_of(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """A part's keys (``S24``) and whether each row failed, as arrays of their own (not views of the part's
    buffers, which may live in shared memory the part should not keep)."""
    keys = key_bytes(table.column(KEY_COLUMN)).copy()
    return keys, table.column(ERROR_COLUMN).is_valid().to_numpy(zero_copy_only=False)


def _exact_parameters(table: pa.Table) -> dict[str, list]:
    """Exact values of the text columns beyond :data:`RESULT_COLUMNS` that hold parameters of other types.

    A parameter whose values in one part have several types (``int | str``, or a name shared by strategy classes)
    is stored as text in its own column; the ``parameters`` column holds every row's parameters exactly, as a JSON
    object. Returns column name → the exact value of every row, for text columns where some value is not a str;
    raises ValueError if ``parameters`` is not JSON objects."""
    text = [f.name for f in table.schema if f.name not in RESULT_COLUMNS and is_string_type(f.type)]
    if not text or not len(table):
        return {}
    encoded = table.column("parameters").combine_chunks().dictionary_encode()
    parsed = [json.loads(v) if v is not None else {} for v in encoded.dictionary.to_pylist()]
    if not all(isinstance(p, dict) for p in parsed):
        raise ValueError("a value is not a JSON object")
    rows = encoded.indices.to_numpy(zero_copy_only=False)
    exact = {}
    for name in text:
        values = np.empty(len(parsed), dtype=object)
        values[:] = [p.get(name) for p in parsed]
        if not all(v is None or isinstance(v, str) for v in values):
            exact[name] = list(values[rows])
    return exact


def _combine(parts: Iterable[tuple[pa.Table, dict[str, list]]], keys: np.ndarray | None) -> pd.DataFrame:
    """Rows of several parts (each a table and its exact parameter values, see :func:`_exact_parameters`) as one
    frame: the newest row per key, optionally only keys in the key set ``keys`` (:func:`raybt._keys.key_set`).

    Columns are unified by name (first-seen order). :data:`RESULT_COLUMNS` keep their dtypes (:data:`ADDED_COLUMNS`:
    pandas' ``Int64``, ``<NA>`` where null); any other column keeps
    its native dtype only if it has one type and a value in every row, else it becomes ``object`` holding the exact
    Python values (None where missing)."""
    parts = list(parts)
    if not parts:
        return pd.DataFrame()
    if keys is not None:
        parts = [_filter(table, exact, contains(keys, key_bytes(table.column(KEY_COLUMN)))) for table, exact in parts]
    tables = [table for table, _ in parts]
    names = list(dict.fromkeys(name for t in tables for name in t.column_names))
    native: dict[str, pa.ChunkedArray] = {}
    nullable_ints: dict[str, pa.ChunkedArray] = {}  # ADDED_COLUMNS: read as pandas' Int64
    exact_columns: dict[str, np.ndarray] = {}
    for name in names:
        chunks = [t.column(name) if name in t.column_names else None for t in tables]
        types = {c.type for c in chunks if c is not None and not pa.types.is_null(c.type)}
        if name in ADDED_COLUMNS:
            nullable_ints[name] = pa.chunked_array([piece for c in chunks for piece in c.chunks],
                                                   type=ADDED_COLUMNS[name])
        elif name in RESULT_COLUMNS:
            target = pa.large_string() if any(pa.types.is_large_string(t) for t in types) else None
            native[name] = pa.chunked_array([piece for c in chunks for piece in _cast(c, target).chunks],
                                            type=_cast(chunks[0], target).type)
        elif any(name in exact for _, exact in parts):
            exact_columns[name] = _object_column(parts, name)
        elif len(types) == 1 and all(c is not None and c.null_count == 0 for c in chunks):
            native[name] = pa.chunked_array([piece for c in chunks for piece in c.chunks], type=types.pop())
        elif len(types) == 1 and pa.types.is_timestamp(next(iter(types))):
            kind = next(iter(types))
            native[name] = pa.chunked_array([piece for t, c in zip(tables, chunks)
                                             for piece in (c if c is not None else pa.nulls(len(t), kind)).chunks],
                                            type=kind)
        else:
            exact_columns[name] = _object_column(parts, name)
    frame = pa.table(native).to_pandas()
    for name, column in nullable_ints.items():
        frame[name] = column.to_pandas(types_mapper={column.type: pd.Int64Dtype()}.get).array
    for name, values in exact_columns.items():
        frame[name] = values
    frame = frame[names]
    frame = frame.drop_duplicates(subset=KEY_COLUMN, keep="last")
    return frame.reset_index(drop=True)


def _filter(table: pa.Table, exact: dict[str, list], mask: np.ndarray) -> tuple[pa.Table, dict[str, list]]:
    if mask.all():  # a part written by the sweep asking for its rows: nothing to copy
        return table, exact
    return table.filter(pa.array(mask)), {name: list(np.asarray(values, dtype=object)[mask])
                                          for name, values in exact.items()}


def _object_column(parts: list[tuple[pa.Table, dict[str, list]]], name: str) -> np.ndarray:
    """Column ``name`` of every part as exact Python values (None where a part lacks it)."""
    values = np.empty(sum(len(t) for t, _ in parts), dtype=object)
    position = 0
    for table, exact in parts:
        if name in exact:
            values[position:position + len(table)] = exact[name]
        elif name in table.column_names:
            values[position:position + len(table)] = _python_values(table.column(name))
        position += len(table)
    return values


def _cast(column: pa.ChunkedArray, target: pa.DataType | None) -> pa.ChunkedArray:
    return column if target is None or column.type == target else column.cast(target)


def _python_values(column: pa.ChunkedArray) -> list:
    """The exact Python values of a plain column (timestamps as pandas Timestamps, nulls as None)."""
    if pa.types.is_timestamp(column.type):
        return [None if v is pd.NaT else v for v in column.to_pandas()]
    return column.to_pylist()


_CHECKED_PARQUET = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns: missing ones null, types cast to the unified ones."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for every part: a column's types promoted (int and float → float), and a column whose parts
    disagree otherwise (a parameter that is text in one part, a number in another) read as text — its exact values
    come back from the ``parameters`` JSON (:func:`scan_frame`)."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        fields: dict[str, pa.DataType] = {}
        for schema in schemas:
            for field in schema:
                known = fields.setdefault(field.name, field.type)
                if known != field.type and not pa.types.is_null(field.type):
                    fields[field.name] = field.type if pa.types.is_null(known) else pa.string()
        return pa.schema(list(fields.items()))


def _scan(sources: list[tuple[pa.ChunkedArray, pa.Schema, Any]], columns: list[str] | None,
          filter: pc.Expression | None, keys: np.ndarray | None) -> pa.Table:
    """Read the parts ``sources`` (oldest first: each its key column, its schema and a function giving it as a
    dataset of the unified schema) lazily.

    Rules: a key's row is the one in the newest part holding the key, decided from the key columns alone *before*
    ``filter`` is applied, so an older version of a row that matches the filter never stands in for a newer one that
    does not (a key twice within its newest part keeps both rows here; :func:`scan_frame` keeps the last). ``filter``
    sees every column of the unified schema (a column missing from a part is null there, so a
    comparison with it is false); ``columns`` may name any of them and the ``key`` column is always returned
    (first, if not named). Unknown names in ``columns`` raise ``KeyError``."""
    if not sources:
        return pa.table({})
    unified = _unified_schema([with_added_fields(schema) for _, schema, _ in sources])
    names = unified.names if columns is None else list(dict.fromkeys([KEY_COLUMN, *columns]))
    unknown = [c for c in names if c not in unified.names]
    if unknown:
        raise KeyError(f"unknown column(s) {unknown}; stored columns are {unified.names}")
    all_keys = np.concatenate([key_bytes(k) for k, _, _ in sources])
    part_of = np.repeat(np.arange(len(sources)), [len(k) for k, _, _ in sources])
    newest_first = all_keys[::-1]
    unique_keys, first = np.unique(newest_first, return_index=True)
    newest_part = part_of[::-1][first]
    condition = filter
    if keys is not None:
        wanted = pc.field(KEY_COLUMN).isin(key_array(key_set(keys)))
        condition = wanted if condition is None else condition & wanted
    tables = []
    for position, (_, _, dataset) in enumerate(sources):
        table = dataset(unified).to_table(columns=names, filter=condition)
        part_keys = key_bytes(table.column(KEY_COLUMN))
        newest_here = newest_part[np.searchsorted(unique_keys, part_keys)] == position
        tables.append(table.filter(pa.array(newest_here)))
    return pa.concat_tables(tables)


def scan_frame(table: pa.Table) -> pd.DataFrame:
    """A scanned table as a DataFrame with the dtypes and exact parameter values of :meth:`CheckpointStore.read`
    (exact values of text parameter columns need the ``parameters`` column among those read), one row per key (the
    last)."""
    if not table.num_columns:
        return pd.DataFrame()
    exact = _exact_parameters(table) if "parameters" in table.column_names else {}
    return _combine([(table, exact)], None)
