"""Tests for raybt._accel.slabs: carving outputs from huge-page slabs, and when a slab goes away."""

from __future__ import annotations

import gc
import mmap
import weakref
from pathlib import Path

import numpy as np
import pytest

from raybt._accel import slabs as _slabs

COLUMN = 43_800  # float64 bars of one output column: 350,400 bytes, within the carved sizes


def test_outputs_are_carved_in_order_from_aligned_slabs() -> None:
    allocator = _slabs.SlabAllocator(enabled=True)
    carved = [allocator.carve(1, COLUMN) for _ in range(_slabs.SLAB_BYTES // (COLUMN * 8) + 1)]
    first_slab = carved[0][1]
    assert all(isinstance(slab, mmap.mmap) for _, slab in carved)
    assert [slab is first_slab for _, slab in carved] == [True] * (len(carved) - 1) + [False]  # the last: a new one
    addresses = [array.ctypes.data for array, _ in carved]
    assert addresses[0] % (2 << 20) == 0  # the slab starts on a huge-page boundary
    step = -(-COLUMN * 8 // 64) * 64  # each output starts on a cache line
    assert np.diff(addresses[:-1]).tolist() == [step] * (len(carved) - 2)
    assert addresses[-1] % (2 << 20) == 0
    for array, _ in carved:
        assert array.shape == (1, COLUMN) and array.dtype == np.float64
        assert array.flags.c_contiguous and array.flags.writeable
    for i, (array, _) in enumerate(carved):  # no two overlap: each keeps what was written to it
        array.fill(i)
    assert [float(array[0, 0]) for array, _ in carved] == [float(i) for i in range(len(carved))]
    assert [float(array[0, -1]) for array, _ in carved] == [float(i) for i in range(len(carved))]


@pytest.mark.parametrize("rows, columns", [(1, _slabs.MIN_BYTES // 8 - 1), (2, _slabs.MAX_BYTES // 16 + 1)])
def test_outputs_outside_the_carved_sizes_are_left_to_the_caller(rows: int, columns: int) -> None:
    allocator = _slabs.SlabAllocator(enabled=True)
    assert allocator.carve(rows, columns) is None
    assert allocator.carve(1, _slabs.MIN_BYTES // 8) is not None
    assert allocator.carve(1, _slabs.MAX_BYTES // 8) is not None


def test_a_disabled_allocator_carves_nothing() -> None:
    assert _slabs.SlabAllocator(enabled=False).carve(1, COLUMN) is None


def test_a_slab_that_cannot_be_mapped_leaves_the_output_to_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory() -> None:
        raise OSError(12, "Cannot allocate memory")

    allocator = _slabs.SlabAllocator(enabled=True)
    with monkeypatch.context() as patch:
        patch.setattr(_slabs, "_map_slab", out_of_memory)
        assert allocator.carve(1, COLUMN) is None
    assert allocator.carve(1, COLUMN) is not None  # mapping works again: carved


def test_a_slab_goes_away_with_its_last_array_once_released() -> None:
    allocator = _slabs.SlabAllocator(enabled=True)
    first, slab = allocator.carve(1, COLUMN)
    second = allocator.carve(1, COLUMN)[0]
    ref = weakref.ref(slab)
    del slab
    del first
    gc.collect()
    assert ref() is not None  # still being filled, and `second` is over it
    allocator.release()
    gc.collect()
    assert ref() is not None  # `second` is over it
    del second
    gc.collect()
    assert ref() is None
    assert allocator.carve(1, COLUMN)[0].ctypes.data % (2 << 20) == 0  # a new slab


@pytest.mark.parametrize("setting, expected", [("always [madvise] never\n", True), ("[always] madvise never\n", True),
                                               ("always madvise [never]\n", False), (None, False)])
def test_huge_pages_are_used_only_where_the_kernel_grants_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               setting: str | None, expected: bool) -> None:
    path = tmp_path / "enabled"
    if setting is not None:
        path.write_text(setting)
    monkeypatch.setattr(_slabs, "_THP_SETTING", path)
    assert _slabs.huge_pages_advisable() is (expected and hasattr(mmap, "MADV_HUGEPAGE"))
    assert _slabs.SlabAllocator().enabled is _slabs.huge_pages_advisable()
