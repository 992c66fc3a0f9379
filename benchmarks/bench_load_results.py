"""Time ``load_results`` on a large checkpoint directory: everything vs. a few columns with a filter.

    python benchmarks/bench_load_results.py [N_ROWS] [DIR]

Builds (once) a directory of N_ROWS rows (default 1,000,000) in parts of 10,000 rows, from a real 200-row sweep
whose rows are repeated with fresh keys and random sharpe / n_trades values, then times the reads.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import raybt
from raybt.checkpoint import CheckpointStore
from raybt.demo import SmaCross

PART_ROWS = 10_000


def build(directory: str, n_rows: int) -> None:
    data = raybt.synthetic_ohlcv(["BTC"], "2023-01-01", "2023-03-01", "1h", seed=0)
    seed_rows = raybt.run_backtests(raybt.grid(SmaCross, fast=range(2, 22), slow=range(30, 130, 10)), data,
                                    show_progress=False).df
    base = pa.Table.from_pandas(seed_rows, preserve_index=False)
    store = CheckpointStore(directory, writer=True)
    rng = np.random.default_rng(0)
    reps = PART_ROWS // len(base)
    for part in range(n_rows // PART_ROWS):
        table = pa.concat_tables([base] * reps)
        keys = [f"{part:08d}{i:016d}" for i in range(len(table))]
        table = table.set_column(table.schema.get_field_index("key"), "key", pa.array(keys))
        table = table.set_column(table.schema.get_field_index("sharpe"), "sharpe", pa.array(rng.normal(0, 1, len(table))))
        table = table.set_column(table.schema.get_field_index("n_trades"), "n_trades",
                                 pa.array(rng.integers(0, 60, len(table)).astype(float)))
        store.write(table)


def timed(label: str, load) -> None:
    started = time.perf_counter()
    df = load()
    print(f"{label:<58} {time.perf_counter() - started:6.2f} s  {len(df):>9,} rows × {df.shape[1]} columns")


def main() -> None:
    n_rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    directory = sys.argv[2] if len(sys.argv) > 2 else f"/tmp/raybt-bench-load-{n_rows}"
    if not Path(directory, "parts").is_dir():
        build(directory, n_rows)
    timed("load_results(dir).df", lambda: raybt.load_results(directory).df)
    timed('columns=["sharpe", "n_trades", "fast", "slow"], no filter',
          lambda: raybt.load_results(directory, columns=["sharpe", "n_trades", "fast", "slow"]).df)
    timed('... filter=[("sharpe", ">", 1), ("n_trades", ">=", 30)]',
          lambda: raybt.load_results(directory, columns=["sharpe", "n_trades", "fast", "slow"],
                                     filter=[("sharpe", ">", 1), ("n_trades", ">=", 30)]).df)


if __name__ == "__main__":
    main()
