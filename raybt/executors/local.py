"""The in-process executor (``n_workers=None`` or ``1``): no Ray, no pickling, batches run one after another."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from raybt.batch import Batch, BatchResult, run_batch
from raybt.data import MarketData
from raybt.plan import RunSettings


class LocalExecutor:
    """Runs each batch in this process."""

    n_workers = 1

    def __init__(self, market: MarketData, settings: RunSettings, profile: bool = False):
        self._market, self._settings, self._profile = market, settings, profile

    def run(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        worker = f"local:{os.getpid()}"
        for batch in batches:
            yield run_batch(self._market, batch, self._settings, self._profile, worker)

    def close(self) -> None:
        """Nothing to release."""
