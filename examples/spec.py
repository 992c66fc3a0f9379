"""A sweep spec for `raybt run` — locally or as a Ray cluster job:

    raybt run examples/spec.py --n-workers -1
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        raybt run examples/spec.py --address auto --checkpoint-dir s3://my-bucket/runs/sma

It defines `strategies`, `data`, `date_ranges` and run options as module-level names; flags override them.
"""

import raybt
from sma_crossover import SmaCross  # the folder of the spec is importable while it loads

data = raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2022-01-01", end="2024-01-01", freq="1h", seed=0)
date_ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
               raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
strategies = [SmaCross(fast=fast, slow=slow) for fast in range(5, 55, 5) for slow in range(20, 210, 10)]

initial_amount = 10_000
fees = 0.001
n_workers = -1
batch_size = 100
checkpoint_dir = "runs/spec"
checkpoint_batch_size = 1_000
continue_on_error = True
