"""The checkpoint store: plain Parquet parts, readers that never write, concurrent writers, damaged and foreign
parts, exact parameter values, full disks, platforms without directory fsync."""

import builtins
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import raybt
import raybt.checkpoint
import sweeps
from raybt.checkpoint import CheckpointStore, CheckpointWarning
from sweeps import GRID, run, same_rows, slow_sweep


@pytest.fixture(scope="module")
def reference():
    """The sweep run sequentially in memory: what every store must give back."""
    return run().df


def parts_of(ck):
    return sorted((ck / "parts").glob("part-*.parquet"))


def files_of(ck):
    """Every file under ``ck`` (relative path -> size and modification time): a snapshot to prove nothing changed."""
    return {str(p.relative_to(ck)): (p.stat().st_size, p.stat().st_mtime_ns) for p in ck.rglob("*") if p.is_file()}


def flip_byte_mid_file(path):
    """Flip a byte inside the data pages, so that a page checksum no longer matches: the last byte of the key
    column's chunk (page payload, not a page header, which checksums do not cover)."""
    chunk = pq.read_metadata(path).row_group(0).column(0)
    assert chunk.path_in_schema == "key"
    data = bytearray(path.read_bytes())
    data[(chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size - 1] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------- plain Parquet

def test_parts_are_plain_parquet_and_deduplicated(tmp_path, reference):
    ck = tmp_path / "ck"
    run(checkpoint_dir=ck)
    parts = parts_of(ck)
    assert len(parts) == 3  # 24 rows in batches of 5, flushed once >= 7 rows are buffered: 10 + 10 + 4
    plain = pd.concat([pd.read_parquet(p) for p in parts])
    assert len(plain) == len(reference) and plain["key"].is_unique
    assert pq.read_table(parts[0]).schema.field("sharpe").type == "double"
    assert raybt.checkpoint.schema_problem(pq.read_schema(parts[0])) is None
    # the same part written twice (e.g. by a retried write) reads back once
    shutil.copy(parts[0], ck / "parts" / "part-99999999999999999999-copy.parquet")
    again = run(checkpoint_dir=ck)
    assert again.n_computed == 0
    same_rows(again.df, reference)


def test_reading_some_keys_gives_exactly_their_newest_rows(tmp_path, reference):
    """``read(keys)`` keeps the rows whose key is asked for (asked twice or not: the same), across parts and with a
    part none of whose rows is asked for; keys without a row are counted in one warning. Checked against a plain
    pandas selection of every stored row, for the Parquet store and the in-memory one."""
    ck = tmp_path / "ck"
    run(checkpoint_dir=ck)
    everything = raybt.load_results(str(ck)).df
    first_part_keys = set(pd.read_parquet(parts_of(ck)[0])["key"])
    wanted = [k for k in everything["key"] if k not in first_part_keys][::2]  # none of the first part
    asked = np.array(wanted + wanted[:3] + ["f" * 24, "0" * 24], dtype="S24")  # duplicates, two unknown keys
    expected = everything[everything["key"].isin(wanted)].reset_index(drop=True)
    memory = raybt.checkpoint.MemoryStore()
    for part in parts_of(ck):
        memory.write(pq.read_table(part))
    for store in (CheckpointStore(str(ck)), memory):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = store.read(asked)
        assert len(got) == len(wanted) > 0
        pd.testing.assert_frame_equal(got, expected)
        if isinstance(store, CheckpointStore):
            assert [str(w.message).split(" jobs")[0] for w in caught] == [f"2 of {len(wanted) + 2}"]


# ---------------------------------------------------------------------------------- readers never modify the store

def _dead_writers_tag():
    """The temporary-name tag of a process of this host that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = psutil.Process(process.pid).create_time()
    process.kill()
    process.wait()
    host = raybt._storage._writer_tag().split("-")[0]
    return f"{host}-{process.pid}-{round(started * 1000)}"


def test_only_temporaries_of_dead_writers_are_removed_and_only_by_writers(tmp_path):
    ck = tmp_path / "ck"
    run(GRID[:1], checkpoint_dir=ck)
    leftovers = {
        "dead": ck / "parts" / f".tmp-{_dead_writers_tag()}-0a1b2c3d-part-1.parquet",
        "dead manifest": ck / f".tmp-{_dead_writers_tag()}-0a1b2c3d-manifest.json",
        "live": ck / "parts" / f".tmp-{raybt._storage._writer_tag()}-0a1b2c3d-part-2.parquet",
        "other host": ck / "parts" / ".tmp-00000000-1-1-0a1b2c3d-part-3.parquet",
        "unknown form": ck / "parts" / ".tmp-part-4.parquet",
    }
    for path in leftovers.values():
        path.write_bytes(b"half a file")
    before = files_of(ck)
    assert len(raybt.load_results(str(ck))) == 2
    assert CheckpointStore(ck).part_paths() == [str(p) for p in parts_of(ck)]
    assert files_of(ck) == before  # a reader removed nothing
    assert run(GRID[:1], checkpoint_dir=ck).n_computed == 0
    assert {name for name, path in leftovers.items() if path.exists()} == {"live", "other host", "unknown form"}


class _DuringWrites:
    """Wraps ``pq.write_table`` in the checkpoint module: calls ``action`` while each part's bytes are being written
    (its temporary exists), as a reader or a second writer running at that moment would."""

    def __init__(self, monkeypatch, action):
        self.original, self.action, self.calls = pq.write_table, action, 0
        monkeypatch.setattr(raybt.checkpoint.pq, "write_table", self)

    def __call__(self, table, where, **kwargs):
        self.original(table, where, **kwargs)
        self.calls += 1
        self.action()


def test_reading_or_opening_while_a_part_is_written_does_not_disturb_the_writer(tmp_path, monkeypatch, reference):
    """Deterministic interleaving: while the sweep's part is in its temporary, a reader (``load_results``) and a
    second writer open the store. Before the fix, either one deleted the temporary and the sweep died on its
    rename (FileNotFoundError)."""
    ck = tmp_path / "ck"
    seen = []

    def open_the_store_meanwhile():
        seen.append(len(raybt.load_results(str(ck))))
        CheckpointStore(ck, writer=True)

    writes = _DuringWrites(monkeypatch, open_the_store_meanwhile)
    results = run(checkpoint_dir=ck)
    assert writes.calls == 3 and seen == [0, 10, 20]  # whole parts only
    same_rows(results.df, reference)


def test_a_reader_looping_during_a_sweep(tmp_path):
    """A sweep in a subprocess writes 50 parts while this process reads the store in a loop: the sweep completes,
    and every read sees whole parts (6 rows each) only and no warning."""
    ck = tmp_path / "ck"
    sweep = subprocess.Popen([sys.executable, sweeps.__file__, str(ck), "150"])
    sizes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reader must never meet a half part or a damaged one
        while sweep.poll() is None:
            df = raybt.load_results(str(ck)).df
            sizes.append(len(df))
            assert len(df) % 6 == 0 and (df["key"].is_unique if len(df) else True)
            if len(df):
                assert df["final_value"].notna().all()
    assert sweep.returncode == 0
    assert len(raybt.load_results(str(ck))) == 300
    assert len(set(sizes)) > 5, f"the reads did not overlap the sweep: {sorted(set(sizes))}"


def test_two_sweeps_writing_the_same_directory(tmp_path):
    """Two writers at once are supported: both complete; every job once; both runs in the manifest."""
    ck = tmp_path / "ck"
    sweeps_ = [subprocess.Popen([sys.executable, sweeps.__file__, str(ck), "150"]) for _ in range(2)]
    assert [s.wait(120) for s in sweeps_] == [0, 0]
    df = raybt.load_results(str(ck)).df
    assert df["key"].is_unique and len(df) == 300
    same_rows(df, slow_sweep(150).df)
    manifest = json.loads((ck / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2
    assert not [p for p in ck.rglob(".tmp-*")]
    resumed = slow_sweep(150, str(ck))
    assert resumed.n_computed == 0 and len(resumed.df) == 300


# ----------------------------------------------------------------------------------------------- damaged parts

def test_damaged_part_is_skipped_by_a_reader_and_quarantined_by_a_writer(tmp_path, reference):
    ck = tmp_path / "ck"
    run(checkpoint_dir=ck)
    part = parts_of(ck)[1]
    n_rows = pq.read_metadata(part).num_rows
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated, as by a crash mid-copy
    with pytest.warns(CheckpointWarning, match=rf"{part.name} is unreadable.*skipped"):
        assert len(raybt.load_results(str(ck))) == len(reference) - n_rows
    assert part.exists()  # a reader moves nothing
    with pytest.warns(CheckpointWarning, match=rf"{part.name} is unreadable.*moved to"):
        again = run(checkpoint_dir=ck)
    assert again.n_computed == n_rows and again.n_skipped == len(reference) - n_rows
    assert (ck / "quarantine" / part.name).exists() and not part.exists()
    same_rows(again.df, reference)


def test_part_damaged_after_its_keys_were_read_is_rerun_in_the_same_call(tmp_path, monkeypatch, reference):
    """The sweep reads the stored keys, then a stored part is damaged (one byte flipped mid-file) while it runs:
    the same call finds the lost rows, quarantines the part and reruns its jobs. Before the fix: the Results held
    fewer rows than its jobs, with only a warning."""
    ck = tmp_path / "ck"
    run(GRID[:6], checkpoint_dir=ck)  # 12 of the 24 jobs, in 2 parts
    victim = parts_of(ck)[0]
    n_lost = pq.read_metadata(victim).num_rows
    original = CheckpointStore.done_keys
    calls = []

    def done_keys_then_damage(self, *args, **kwargs):
        keys = original(self, *args, **kwargs)
        if not calls:
            flip_byte_mid_file(victim)
        calls.append(len(keys))
        return keys

    monkeypatch.setattr(CheckpointStore, "done_keys", done_keys_then_damage)
    with pytest.warns(CheckpointWarning) as caught:
        results = run(checkpoint_dir=ck)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert re.search(rf"{victim.name} is unreadable.*moved to", messages[0], re.S)
    assert re.search(rf"{n_lost} jobs of this sweep lost their stored rows while it ran .*running them again",
                     messages[1])
    assert calls[0] == 12
    assert len(results.df) == len(reference)
    assert results.n_computed == 12 + n_lost and results.n_skipped == 12 - n_lost
    assert (ck / "quarantine" / victim.name).exists()
    same_rows(results.df, reference)


def test_rows_that_keep_getting_lost_fail_the_sweep_clearly(tmp_path, monkeypatch):
    """If a job's row disappears again after every rerun, the sweep stops after a bounded number of rounds with an
    error naming a job, instead of looping or returning fewer rows."""
    ck = tmp_path / "ck"
    original = CheckpointStore.done_keys
    lost_for_ever = []

    def never_keeps_the_first_job(self, *args, **kwargs):
        keys = original(self, *args, **kwargs)
        if not lost_for_ever and len(keys):
            lost_for_ever.append(keys[0])
        return keys[keys != lost_for_ever[0]] if lost_for_ever else keys

    monkeypatch.setattr(CheckpointStore, "done_keys", never_keeps_the_first_job)
    with pytest.warns(CheckpointWarning, match="1 jobs of this sweep lost their stored rows"):
        with pytest.raises(raybt.checkpoint.CheckpointError, match=r"1 jobs of this sweep, e.g. SmaCross\(.*\) on "
                                                                   r"range '.*', still have no usable row in .* after "
                                                                   r"running them 3 more times"):
            run(GRID[:2], checkpoint_dir=ck)


def test_a_store_opened_for_reading_cannot_write(tmp_path):
    ck = tmp_path / "ck"
    run(GRID[:1], checkpoint_dir=ck)
    table = pq.read_table(parts_of(ck)[0])
    with pytest.raises(PermissionError, match="opened for reading; open it with writer=True"):
        CheckpointStore(ck).write(table)
    with pytest.raises(ValueError, match=r"not a result table: missing columns \['sharpe'\]"):
        CheckpointStore(ck, writer=True).write(table.drop_columns(["sharpe"]))


def test_rows_lost_after_a_sweep_with_nothing_to_run_are_named(tmp_path, reference):
    """Nothing to compute, then a part is damaged before ``df`` is read: ``df`` says how many rows are missing and
    which part and why, instead of returning fewer rows with only a generic warning."""
    ck = tmp_path / "ck"
    run(checkpoint_dir=ck)
    results = run(checkpoint_dir=ck)
    assert results.n_skipped == len(reference)
    victim = parts_of(ck)[0]
    flip_byte_mid_file(victim)
    with pytest.warns(CheckpointWarning) as caught:
        assert len(results.df) == 14
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and re.search(rf"{victim.name} is unreadable.*skipped", messages[0], re.S)
    assert re.search(rf"10 of 24 jobs have no row in .*{victim.name}: unreadable", messages[1])
    assert victim.exists()  # reading results never moves a part


# ----------------------------------------------------------------------------------------------- foreign parts

def _rewrite(part, change):
    table = change(pq.read_table(part))
    pq.write_table(table, part)


FOREIGN = {
    "old schema": (lambda t: t.drop_columns(["sharpe", "sortino"]), "missing columns \\['sharpe', 'sortino'\\]"),
    "no key": (lambda t: t.drop_columns(["key"]), "missing columns \\['key'\\]"),
    "int key": (lambda t: t.set_column(0, "key", pa.array(range(len(t)), pa.int64())),
                "column 'key' has type int64, not string"),
    "short key": (lambda t: t.set_column(0, "key", pa.array(["k"] * len(t))), "its 'key' column holds values that are not 24-character job keys"),
    "binary column": (lambda t: t.append_column("blob", pa.array([b"x"] * len(t))),
                      "column 'blob' has type binary"),
    "nested column": (lambda t: t.append_column("lists", pa.array([[1, 2]] * len(t))),
                      "column 'lists' has type list<.*int64>"),
    "metric as text": (lambda t: t.set_column(t.schema.get_field_index("sharpe"), "sharpe",
                                              t.column("sharpe").cast(pa.string())),
                       "column 'sharpe' has type string, not float64"),
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_foreign_part_is_skipped_by_a_reader_and_quarantined_by_a_writer(tmp_path, reference, kind):
    change, problem = FOREIGN[kind]
    ck = tmp_path / "ck"
    run(checkpoint_dir=ck)
    part = parts_of(ck)[0]
    n_rows = pq.read_metadata(part).num_rows
    _rewrite(part, change)
    with pytest.warns(CheckpointWarning, match=rf"{part.name} is foreign: {problem}.*skipped"):
        assert len(raybt.load_results(str(ck))) == len(reference) - n_rows
    assert part.exists()
    with pytest.warns(CheckpointWarning, match=rf"{part.name} is foreign: {problem}.*moved to"):
        again = run(checkpoint_dir=ck)
    assert again.n_computed == n_rows
    same_rows(again.df, reference)
    assert (ck / "quarantine" / part.name).exists()


def test_stray_files_in_parts_are_foreign(tmp_path, reference):
    ck = tmp_path / "ck"
    run(checkpoint_dir=ck)
    pq.write_table(pa.table({"a": [1, 2]}), ck / "parts" / "part-stray.parquet")
    (ck / "parts" / "notes.txt").write_text("not a part")
    with pytest.warns(CheckpointWarning) as caught:
        same_rows(raybt.load_results(str(ck)).df, reference)
    assert sorted(str(w.message).split(" is ")[0].rsplit("/", 1)[1] for w in caught) == ["notes.txt",
                                                                                      "part-stray.parquet"]
    with pytest.warns(CheckpointWarning, match="moved to"):
        assert run(checkpoint_dir=ck).n_computed == 0
    assert sorted(p.name for p in (ck / "quarantine").iterdir()) == ["notes.txt", "part-stray.parquet"]


PICKLED_PART = textwrap.dedent("""
    import sys, warnings
    from pathlib import Path
    import pyarrow.parquet as pq
    import ray.data  # registers Ray Data's pickled-object Arrow extension type in this process
    try:
        from ray.data._internal.object_extensions.arrow import ArrowPythonObjectArray
    except ImportError:  # Ray before 2.5x kept it here
        from ray.air.util.object_extensions.arrow import ArrowPythonObjectArray
    import raybt
    from raybt.checkpoint import CheckpointWarning

    ck, marker = Path(sys.argv[1]), Path(sys.argv[2])

    class Payload:
        def __reduce__(self):  # what unpickling runs
            return (Path.touch, (marker,))

    part = sorted((ck / "parts").glob("part-*.parquet"))[0]
    table = pq.read_table(part)
    table = table.append_column("payload", ArrowPythonObjectArray.from_objects([Payload()] * len(table)))
    pq.write_table(table, part)
    assert not marker.exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = len(raybt.load_results(str(ck)))
    print(rows, "|", "; ".join(str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)))
""")


def test_pickled_object_column_is_never_unpickled(tmp_path, reference):
    """A part with a column of Ray Data's pickled-object extension type, read by a process that imported
    ``ray.data`` (so the type is registered): skipped as foreign, its pickle never runs."""
    ck, marker = tmp_path / "ck", tmp_path / "unpickled"
    run(checkpoint_dir=ck)
    n_rows = pq.read_metadata(parts_of(ck)[0]).num_rows
    script = tmp_path / "read_pickled.py"
    script.write_text(PICKLED_PART)
    done = subprocess.run([sys.executable, str(script), str(ck), str(marker)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert not marker.exists(), "the part's pickle ran"
    rows, messages = done.stdout.strip().split(" | ")
    assert int(rows) == len(reference) - n_rows
    assert "is foreign: column 'payload' has type extension<ray.data.arrow_pickled_object" in messages
    with pytest.warns(CheckpointWarning, match="column 'payload'.*moved to"):
        same_rows(run(checkpoint_dir=ck).df, reference)  # a writer (without ray.data) quarantines it, reruns
    assert not marker.exists()


@pytest.mark.parametrize("manifest", ['[1, 2]', '{"runs": 5}', '{"runs": [1]}', '"text"', "not json {"])
def test_manifest_of_the_wrong_shape_is_replaced_with_a_warning(tmp_path, manifest):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "manifest.json").write_text(manifest)
    with pytest.warns(CheckpointWarning, match="manifest.json is .*starting a new manifest"):
        assert run(GRID[:1], checkpoint_dir=ck).n_computed == 2
    runs = json.loads((ck / "manifest.json").read_text())["runs"]
    assert [r["jobs"] for r in runs] == [2]


# ------------------------------------------------------------------------------------- exact parameter values

class IntP(raybt.Strategy):
    p: int = 1

    def signals(self, data):
        return data.close > data.close.shift(2), data.close < data.close.shift(2)


class StrP(raybt.Strategy):
    p: str = "a"

    def signals(self, data):
        return data.close > data.close.shift(3), data.close < data.close.shift(3)


class BoolP(raybt.Strategy):
    p: bool = True

    def signals(self, data):
        return data.close > data.close.shift(4), data.close < data.close.shift(4)


class IntOrStr(raybt.Strategy):
    p: int | str = 1
    q: float | None = None

    def signals(self, data):
        return data.close > data.close.shift(5), data.close < data.close.shift(5)


MIXED = [IntP(p=7), StrP(p="x"), BoolP(p=True), IntOrStr(p=2), IntOrStr(p="y", q=0.5), IntOrStr(p=3, q=None)]
EXPECTED_P = [7, "x", True, 2, "y", 3]
EXPECTED_Q = [None, None, None, None, 0.5, None]


@pytest.mark.parametrize("one_part", [False, True], ids=["part per strategy", "one part"])
@pytest.mark.parametrize("where", ["memory", "checkpoint", "load_results"])
def test_mixed_parameter_types_read_back_exactly(tmp_path, where, one_part):
    """With one strategy per part (batch and part of one strategy's two ranges) the parts' ``p`` columns are int64,
    string and bool: before the fix ``df`` raised ArrowTypeError (and an in-memory sweep lost every row). In one
    part, ``p`` is stored as text and its exact values come from the ``parameters`` JSON."""
    ck = None if where == "memory" else tmp_path / "ck"
    sizes = dict(batch_size=100, checkpoint_batch_size=100) if one_part else dict(batch_size=2, checkpoint_batch_size=2)
    results = run(MIXED, checkpoint_dir=ck, **sizes)
    df = raybt.load_results(str(ck)).df if where == "load_results" else results.df
    assert len(df) == 2 * len(MIXED)
    by_strategy = {sid: group for sid, group in df.groupby("strategy_id")}
    for strategy, p, q in zip(MIXED, EXPECTED_P, EXPECTED_Q):
        rows = by_strategy[strategy.id]
        assert [(type(v), v) for v in rows["p"]] == [(type(p), p)] * 2
        assert [(type(v), v) for v in rows["q"]] == [(type(q), q)] * 2
    assert df["p"].dtype == object and df["q"].dtype == object


@pytest.mark.parametrize("checkpoint_batch_size", [2, 100])
def test_int_parameter_with_missing_values_stays_int(tmp_path, checkpoint_batch_size):
    """A parameter only some strategies have, in one part or in several: ints and None (object dtype), not floats
    and NaN; a parameter with a value of one type in every row keeps its native dtype."""
    run([IntP(p=5), GRID[0]], checkpoint_dir=tmp_path / "ck", batch_size=2,
        checkpoint_batch_size=checkpoint_batch_size)
    df = raybt.load_results(str(tmp_path / "ck")).df.sort_values("strategy")
    assert [(type(v), v) for v in df["p"]] == [(int, 5)] * 2 + [(type(None), None)] * 2
    assert [(type(v), v) for v in df["fast"]] == [(type(None), None)] * 2 + [(int, 3)] * 2
    assert df["p"].dtype == object
    assert run([IntP(p=5), IntP(p=6)]).df["p"].dtype == np.int64


# ------------------------------------------------------------------------------------------- reading never writes

class _ReadOnlyFs:
    """A pyarrow filesystem whose every modifying call fails as on a read-only mount."""

    MODIFYING = {"create_dir", "delete_dir", "delete_dir_contents", "delete_file", "move", "copy_file",
                 "open_output_stream", "open_append_stream"}

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        if name in self.MODIFYING:
            raise OSError(errno.EROFS, f"read-only filesystem ({name})")
        return getattr(self._fs, name)


def test_a_read_only_directory_can_be_read(tmp_path, monkeypatch, reference):
    """A directory with a leftover temporary, a damaged part and a foreign part, read where every write fails
    (tests run as root, where permission bits stop nothing, so the filesystem calls are replaced): reading works
    and writes nothing."""
    ck = tmp_path / "ck"
    run(checkpoint_dir=ck)
    damaged, foreign, good = parts_of(ck)
    damaged.write_bytes(damaged.read_bytes()[:100])
    _rewrite(foreign, lambda t: t.drop_columns(["sharpe"]))
    (ck / "parts" / f".tmp-{_dead_writers_tag()}-0a1b2c3d-part-9.parquet").write_bytes(b"half")
    before = files_of(ck)

    attempts = []

    def refuse(name):
        def refused(*args, **kwargs):
            attempts.append((name, args))
            raise OSError(errno.EROFS, f"read-only filesystem ({name})")
        return refused

    for name in ("unlink", "remove", "replace", "rename", "mkdir", "makedirs", "rmdir"):
        monkeypatch.setattr(os, name, refuse(f"os.{name}"))
    monkeypatch.setattr(shutil, "rmtree", refuse("shutil.rmtree"))
    monkeypatch.setattr(shutil, "move", refuse("shutil.move"))
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda file, mode="r", *a, **k: (
        refuse("open")(file, mode) if any(c in mode for c in "wax+") else real_open(file, mode, *a, **k)))
    real_filesystem = raybt.checkpoint._filesystem
    monkeypatch.setattr(raybt.checkpoint, "_filesystem",
                        lambda location: (lambda fs, root: (_ReadOnlyFs(fs), root))(*real_filesystem(location)))

    with pytest.warns(CheckpointWarning) as caught:
        df = raybt.load_results(str(ck)).df
    assert len(df) == pq.read_metadata(good).num_rows
    same_rows(df, reference[reference["key"].isin(df["key"])])
    assert {str(w.message).split(" is ")[0].rsplit("/", 1)[1] for w in caught} == {damaged.name, foreign.name}
    from raybt.cli import main
    with pytest.warns(CheckpointWarning):
        assert main(["results", str(ck)]) == 0
    assert attempts == []
    monkeypatch.undo()
    assert files_of(ck) == before


# ----------------------------------------------------------------------------------------- full disk, platforms

def test_a_full_disk_mid_sweep_loses_nothing_and_resumes(tmp_path, monkeypatch, reference):
    ck = tmp_path / "ck"
    original, written = pq.write_table, []

    def fills_up_after_one_part(table, where, **kwargs):
        if written:
            where.write(b"PAR1 half a part")
            raise OSError(errno.ENOSPC, "No space left on device")
        original(table, where, **kwargs)
        written.append(len(table))

    monkeypatch.setattr(raybt.checkpoint.pq, "write_table", fills_up_after_one_part)
    with pytest.raises(OSError, match="No space left on device"):
        run(checkpoint_dir=ck)
    monkeypatch.undo()
    assert len(parts_of(ck)) == 1 and not list(ck.rglob(".tmp-*"))  # the failed write left no temporary
    resumed = run(checkpoint_dir=ck)
    assert resumed.n_skipped == written[0] == 10 and resumed.n_computed == len(reference) - 10
    same_rows(resumed.df, reference)


def test_no_directory_fsync_where_directories_cannot_be_opened(tmp_path, monkeypatch, reference):
    """On Windows ``os.open`` on a directory raises PermissionError: checkpoints still work."""
    real_open = os.open

    def no_directories(path, flags, *args, **kwargs):
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_directories)
    same_rows(run(checkpoint_dir=tmp_path / "ck").df, reference)
