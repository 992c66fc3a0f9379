"""Checkpoints in an object store: sweeps to ``s3://`` against a real S3-compatible server (moto_server on 127.0.0.1).

The store is reached through its URI alone: ``s3://KEY:SECRET@bucket/prefix?endpoint_override=HOST:PORT&scheme=http
&region=REGION`` (pyarrow takes credentials only from the URI's user info or the usual AWS variables, not from the
query).
"""

import http.client
import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import raybt
import raybt.checkpoint
from raybt.checkpoint import CheckpointStore, CheckpointWarning
import sweeps
from sweeps import GRID, run, same_rows, slow_sweep

BUCKET, KEY, SECRET, REGION = "bucket", "testing", "testing", "us-east-1"


# ------------------------------------------------------------------------------------------------- the server

def _moto_server_command(port: int) -> list[str] | None:
    """moto_server of this interpreter's environment (also when its bin folder is not on PATH), else on PATH."""
    args = ["-H", "127.0.0.1", "-p", str(port)]
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return [str(beside), *args]
    if shutil.which("moto_server"):
        return [shutil.which("moto_server"), *args]
    if importlib.util.find_spec("moto") is not None and importlib.util.find_spec("moto.server") is not None:
        return [sys.executable, "-m", "moto.server", *args]
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/moto-api/")
        connection.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        connection.close()


class S3:
    """A moto_server: its endpoint, an admin filesystem on it, and checkpoint URIs in its bucket."""

    def __init__(self, port: int):
        self.endpoint = f"127.0.0.1:{port}"
        self.fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=self.endpoint,
                                    scheme="http", region=REGION, allow_bucket_creation=True)

    def uri(self, prefix: str) -> str:
        return f"s3://{KEY}:{SECRET}@{BUCKET}/{prefix}?endpoint_override={self.endpoint}&scheme=http&region={REGION}"

    def objects(self, prefix: str) -> dict[str, int]:
        """Files under ``bucket/prefix`` (relative path -> size)."""
        infos = self.fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
        return {i.path[len(BUCKET) + len(prefix) + 2:]: i.size for i in infos if i.type == pafs.FileType.File}

    def parts(self, prefix: str) -> list[str]:
        return sorted(f"{BUCKET}/{prefix}/{name}" for name in self.objects(prefix)
                      if name.startswith("parts/part-") and name.endswith(".parquet"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    port = _free_port()
    command = _moto_server_command(port)
    if command is None:
        pytest.skip("moto_server not found: pip install 'moto[server]>=5.2.2' (or pip install -e '.[dev]')")
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto_server did not start ({' '.join(command)}):\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        store = S3(port)
        store.fs.create_dir(BUCKET)
        try:  # moto 5.2.0/5.2.1 answer CompleteMultipartUpload with a wrong XML root, which pyarrow rejects
            with store.fs.open_output_stream(f"{BUCKET}/probe") as handle:
                handle.write(b"probe")
        except OSError as exc:
            pytest.fail(f"moto_server cannot complete multipart uploads ({exc}); getmoto/moto#10055: "
                        f"pip install 'moto[server]>=5.2.2'")
        store.fs.delete_file(f"{BUCKET}/probe")
        yield store
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def reference():
    return run().df


# ---------------------------------------------------------------------------------------------------- tests

def test_sweep_to_s3_reads_back_identical(s3, reference):
    uri = s3.uri("run")
    first = run(checkpoint_dir=uri)
    assert first.n_computed == len(reference) and first.checkpoint_dir == uri
    assert SECRET not in repr(first) and "s3://***@" in repr(first)  # credentials are not echoed
    same_rows(first.df, reference)
    again = run(checkpoint_dir=uri)
    assert again.n_computed == 0 and again.n_skipped == len(reference)
    same_rows(again.df, reference)
    same_rows(raybt.load_results(uri).df, reference)

    # the parts are plain objects under run/parts/, readable without raybt
    parts = s3.parts("run")
    assert len(parts) == 3  # 24 rows in batches of 5, flushed once >= 7 rows are buffered: 10 + 10 + 4
    assert set(s3.objects("run")) == {"manifest.json", *(p[len(BUCKET) + 5:] for p in parts)}
    plain = pd.concat([pq.read_table(p, filesystem=s3.fs).to_pandas() for p in parts])
    assert len(plain) == len(reference) and plain["key"].is_unique
    # (pandas reads an integer column with nulls, the permutation columns of a sweep's rows, as floats: NaN)
    same_rows(plain, reference.astype({"permutation_seed": "float64", "permutation": "float64"}))
    assert pq.read_table(f"{BUCKET}/run/parts", filesystem=s3.fs).num_rows == len(reference)  # as a dataset


def test_manifest_is_json(s3):
    uri = s3.uri("manifest")
    run(GRID[:2], checkpoint_dir=uri)
    run(GRID[:3], checkpoint_dir=uri)
    run(GRID[:3], checkpoint_dir=uri)  # nothing to run: not recorded
    with s3.fs.open_input_stream(f"{BUCKET}/manifest/manifest.json") as handle:
        manifest = json.loads(handle.read())
    assert manifest["format"] == 1
    assert [r["jobs"] for r in manifest["runs"]] == [4, 6] and [r["to_run"] for r in manifest["runs"]] == [4, 2]
    assert {"started", "raybt_results_version", "data_fingerprint", "settings", "executor"} <= set(manifest["runs"][0])


def test_corrupt_object_is_quarantined_and_its_jobs_rerun(s3, reference):
    uri = s3.uri("corrupt")
    run(checkpoint_dir=uri)
    part = s3.parts("corrupt")[1]
    name = part.rsplit("/", 1)[1]
    n_rows = pq.read_metadata(part, filesystem=s3.fs).num_rows
    with s3.fs.open_input_stream(part) as handle:
        whole = handle.read()
    with s3.fs.open_output_stream(part) as handle:
        handle.write(whole[: len(whole) // 2])  # truncated, as by a broken copy
    with pytest.warns(CheckpointWarning, match="unreadable.*moved to"):
        again = run(checkpoint_dir=uri)
    assert again.n_computed == n_rows
    objects = s3.objects("corrupt")
    assert f"parts/{name}" not in objects and objects[f"quarantine/{name}"] == len(whole) // 2
    same_rows(again.df, reference)
    assert run(checkpoint_dir=uri).n_computed == 0


class Interrupted(Exception):
    pass


class HalfWritingFs:
    """The store's filesystem, whose output streams send half the bytes and then fail; closing them (as pyarrow's
    ``with`` does, even on an exception) publishes the half written object."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def open_output_stream(self, path):
        stream = self._fs.open_output_stream(path)

        class HalfWriting:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                stream.close()

            def write(self, payload):
                stream.write(memoryview(payload)[: len(payload) // 2])
                raise Interrupted("upload interrupted")

        return HalfWriting()


def test_interrupted_upload_leaves_no_object(s3):
    store = CheckpointStore(s3.uri("interrupted"), writer=True)
    pa = raybt.checkpoint.pa
    table = pa.Table.from_pandas(run(GRID[:1]).df, preserve_index=False)
    # pandas 2 hands an all-None column to Arrow as type null (pandas 3 as string, what raybt writes)
    table = table.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]))
    store._fs = HalfWritingFs(store._fs)
    with pytest.raises(Interrupted):
        store.write(table)
    assert s3.objects("interrupted") == {}
    store._fs = store._fs._fs
    store.write(table)
    assert len(s3.parts("interrupted")) == 1 and len(store.read()) == 2


def test_credentials_from_environment(s3, monkeypatch, reference):
    """The other form: credentials and endpoint from the usual AWS variables, a bare ``s3://bucket/prefix``."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3.endpoint}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    results = run(GRID[:2], checkpoint_dir=f"s3://{BUCKET}/from-env")
    assert results.n_computed == 4 and len(s3.parts("from-env")) == 1
    same_rows(results.df, reference[reference["key"].isin(results.df["key"])])


# --------------------------------------------------------------------------------------------- driver crash

def test_driver_killed_then_resumed_from_s3(s3):
    uninterrupted = slow_sweep(100).df
    assert len(uninterrupted) == 200

    uri = s3.uri("killed")
    process = subprocess.Popen([sys.executable, sweeps.__file__, uri, "100"])
    try:
        deadline = time.monotonic() + 60
        while not s3.parts("killed"):  # wait until the sweep is under way (a part is in the bucket) ...
            assert process.poll() is None, "the driver exited before writing a part"
            assert time.monotonic() < deadline, "no part appeared in the bucket"
            time.sleep(0.02)
        time.sleep(0.3)  # ... then kill it mid-sweep, likely in the middle of an upload
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    stored_before = len(raybt.load_results(uri))
    assert 0 < stored_before < 200, f"{stored_before} rows stored: the kill did not land mid-sweep"
    resumed = slow_sweep(100, uri)
    assert resumed.n_skipped == stored_before and resumed.n_computed == 200 - stored_before
    assert resumed.df["key"].is_unique and len(resumed.df) == 200
    same_rows(resumed.df, uninterrupted)
    assert raybt.load_results(uri).df["key"].is_unique and len(raybt.load_results(uri)) == 200
