"""The true number of trials behind a sweep, read from its checkpoint directory (read-only).

Every job raybt ever ran in a checkpoint directory is kept there — failed ones (with their ``error``) and those a
later step chose not to pursue — so the directory, unlike the DataFrame a user holds, knows how many
configurations were really tried. The store's rows do not record the data they ran on; the manifest does
(``runs``: one entry per run, with its ``data_fingerprint`` and planned ``jobs``). So the count is exact for a
directory whose runs all used the same data, and refused for a directory mixing data sets.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raybt._storage import _filesystem

_COLUMNS = ("key", "error", "strategy_id", "symbol", "range")


class TrialCountWarning(UserWarning):
    """A checkpoint part could not be read while counting trials: the count misses its jobs."""


@dataclass(frozen=True)
class TrialCount:
    """Jobs stored in a checkpoint directory on one data set.

    ``n_jobs``: distinct jobs (keys), failed ones included. ``n_failed``: those whose newest row has an error.
    ``n_configurations``: distinct (strategy, symbol) configurations — a strategy run on several date ranges is
    one configuration tried several times. ``by_range``: distinct configurations per range name. For the deflated
    Sharpe ratio of a row selected on one range use ``by_range[<that range>]``; with one range per directory all
    three counts agree (``n_jobs == n_configurations``). ``planned_jobs``: the sum of ``jobs`` over the manifest's
    runs on this data (a run counts the jobs it planned, including those already stored, so this overstates).
    """

    data_fingerprint: str
    n_jobs: int
    n_failed: int
    n_configurations: int
    by_range: dict[str, int] = field(default_factory=dict)
    planned_jobs: int = 0
    n_runs: int = 0


def count_trials(checkpoint_dir: str | os.PathLike[str], data_fingerprint: str | None = None) -> TrialCount:
    """Count the trials stored in ``checkpoint_dir`` (a path or a pyarrow filesystem URI), never writing to it.

    ``data_fingerprint`` (``raybt.load_ohlcv(data).fingerprint``) names the data the trials must have run on;
    when omitted, the directory's runs must all share one. A directory whose manifest lists runs on other data
    too, or that has no manifest, is an error: its rows cannot be told apart by data. So is a directory a
    permutation test wrote (:func:`raybt.stats.permutation_test`): rows on permuted markets are not trials.
    Unreadable parts are skipped with a :class:`TrialCountWarning` naming them.
    """
    location = os.fspath(checkpoint_dir)
    fs, root = _filesystem(location)
    runs = _manifest_runs(fs, root, location)
    fingerprints = sorted({str(run.get("data_fingerprint")) for run in runs})
    if data_fingerprint is None:
        if len(fingerprints) != 1:
            raise ValueError(f"{location}: runs on {len(fingerprints)} data sets ({', '.join(fingerprints)}); pass "
                             f"data_fingerprint= to say which one")
        data_fingerprint = fingerprints[0]
    if data_fingerprint not in fingerprints:
        raise ValueError(f"{location}: no run on data {data_fingerprint}; its manifest lists {fingerprints}")
    if len(fingerprints) > 1:
        raise ValueError(f"{location}: mixes runs on {len(fingerprints)} data sets ({', '.join(fingerprints)}); its "
                         f"rows do not record their data, so the trials on {data_fingerprint} cannot be counted "
                         f"apart. Keep one checkpoint directory per data set.")
    permuted = [run for run in runs if "permutations" in run]
    if permuted:
        raise ValueError(f"{location}: holds the rows of {len(permuted)} permutation test run(s) (strategies on "
                         f"permuted markets, raybt.stats.permutation_test), which are not trials of a search; "
                         f"count the trials in the sweep's own directory")
    table = _read_rows(fs, root)
    rows = table.to_pandas() if table.num_rows else pd.DataFrame(columns=list(_COLUMNS))
    for column in _COLUMNS:
        if column not in rows:
            rows[column] = None
    newest = rows.drop_duplicates("key", keep="last")          # parts are read oldest first: newest row per key
    configurations = newest[["strategy_id", "symbol"]].astype("string").fillna("")
    configurations["range"] = newest["range"].astype("string").fillna("")
    by_range = configurations.drop_duplicates().groupby("range").size()
    our_runs = [run for run in runs if run.get("data_fingerprint") == data_fingerprint]
    return TrialCount(data_fingerprint=data_fingerprint, n_jobs=len(newest),
                      n_failed=int(newest["error"].notna().sum()),
                      n_configurations=len(configurations[["strategy_id", "symbol"]].drop_duplicates()),
                      by_range={str(k): int(v) for k, v in by_range.items()},
                      planned_jobs=sum(int(run.get("jobs", 0)) for run in our_runs), n_runs=len(our_runs))


def _manifest_runs(fs: pafs.FileSystem, root: str, location: str) -> list[dict]:
    try:
        with fs.open_input_stream(f"{root}/manifest.json") as handle:
            manifest = json.loads(handle.read().decode())
    except FileNotFoundError:
        raise ValueError(f"{location}: no manifest.json, so the data its rows ran on is unknown "
                         f"(is this a raybt checkpoint directory?)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{location}/manifest.json is unreadable ({exc})") from None
    runs = manifest.get("runs") if isinstance(manifest, dict) else None
    if not isinstance(runs, list) or not all(isinstance(run, dict) and "data_fingerprint" in run for run in runs):
        raise ValueError(f"{location}/manifest.json is not a raybt manifest (a 'runs' list with data fingerprints)")
    if not runs:
        raise ValueError(f"{location}/manifest.json lists no runs")
    return runs


def _read_rows(fs: pafs.FileSystem, root: str) -> pa.Table:
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/parts", allow_not_found=True))
    paths = sorted(i.path for i in infos if i.type == pafs.FileType.File
                   and os.path.basename(i.path).startswith("part-") and i.path.endswith(".parquet"))
    tables = []
    for path in paths:
        try:
            with fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                present = [c for c in _COLUMNS if c in parquet.schema_arrow.names]
                if "key" not in present:
                    raise ValueError("no 'key' column")
                table = parquet.read(columns=present)
        except (OSError, ValueError, pa.ArrowException) as exc:
            warnings.warn(f"count_trials: skipped unreadable part {path} ({exc}); its jobs are not counted",
                          TrialCountWarning, stacklevel=3)
            continue
        tables.append(table)
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
