"""Hand-written LLVM intrinsics and their plain numba twins (see :mod:`raybt._accel`).

The public names are the fast version, or with ``RAYBT_PORTABLE=1`` the plain twin (same arguments, same results
bit for bit; a test compares them):

* :func:`signal_mask` / :func:`lowest_set_bit`: the simulation kernel's signal scan, 32 signal bars at a time;
* :func:`compress_below` / :func:`compress_split`: the metrics' selection of returns, a vector of 8 at a time;
* :func:`float_from_bits`: a float64 from its int64 bit pattern;
* :func:`divide_in_place`: the SMA's division of window sums by the window length.

Indices the callers pass are uint64 and unchecked (the callers keep them in bounds): numba's negative-index
wraparound on signed ones would block vectorisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from raybt._accel import NO_REFCOUNT, PORTABLE
from raybt._jit import jit

# ---------------------------------------------------------------------------------------------------------------------
# The signal scan of the simulation kernel
# ---------------------------------------------------------------------------------------------------------------------

SIGNAL_LANES = 32  # signal bars tested at once by the signal scan: one 32-byte vector per array


def _is_signal_array(array: types.Type) -> bool:
    """Whether ``array`` is a numba type :func:`_signal_mask_fast` can address: a C-contiguous 2-D bool array."""
    return (isinstance(array, types.Array) and array.ndim == 2 and array.layout == "C"
            and array.dtype == types.boolean)


@intrinsic
def _signal_mask_fast(typingctx, entries, exits, row, column):
    """A uint32 whose bit ``k`` is set iff ``entries[row, column + k]`` or ``exits[row, column + k]`` (``k <
    SIGNAL_LANES``): one unaligned vector load from each array, an OR, a compare with zero and the lanes' bits
    (pmovmskb on x86). Unchecked: the caller keeps ``column + SIGNAL_LANES`` within the row (uint64 column)."""
    if not (_is_signal_array(entries) and _is_signal_array(exits)):
        return None
    signature = types.uint32(entries, exits, types.intp, types.uint64)

    def codegen(context, builder, sig, args):
        entries_value, exits_value, row_value, column_value = args
        byte = ir.IntType(8)
        lanes = ir.VectorType(byte, SIGNAL_LANES)

        def load(array_type, array_value):
            array = context.make_array(array_type)(context, builder, array_value)
            row_start = builder.mul(row_value, builder.extract_value(array.shape, 1))
            first = builder.gep(builder.bitcast(array.data, byte.as_pointer()), [builder.add(row_start, column_value)])
            return builder.load(builder.bitcast(first, lanes.as_pointer()), align=1)

        either = builder.or_(load(sig.args[0], entries_value), load(sig.args[1], exits_value))
        set_lanes = builder.icmp_unsigned("!=", either, ir.Constant(lanes, None))
        return builder.bitcast(set_lanes, ir.IntType(SIGNAL_LANES))

    return signature, codegen


@intrinsic
def _lowest_set_bit_fast(typingctx, mask):
    """The index of the lowest set bit of a non-zero unsigned integer (LLVM's cttz: one tzcnt/bsf instruction)."""
    if not (isinstance(mask, types.Integer) and not mask.signed):
        return None

    def codegen(context, builder, sig, args):
        word = ir.IntType(sig.args[0].bitwidth)
        count = cgutils.get_or_insert_function(builder.module, ir.FunctionType(word, [word, ir.IntType(1)]),
                                               f"llvm.cttz.i{word.width}")
        return builder.call(count, [args[0], ir.Constant(ir.IntType(1), 1)])  # 1: the result for 0 is undefined

    return mask(mask), codegen


# ---------------------------------------------------------------------------------------------------------------------
# Compress intrinsics: the values of a vector that pass a comparison, stored contiguously
# ---------------------------------------------------------------------------------------------------------------------

COMPRESS_LANES = 8  # float64 values per vector of the compress intrinsics (AVX-512: one register)
_LANES = COMPRESS_LANES


def _compress_kind() -> str:
    """How the compress intrinsics store the selected lanes, for the CPU numba compiles for.

    "memory": ``llvm.masked.compressstore``, one AVX-512 compress to memory: the fastest on Intel, but microcoded
    (very slow) on AMD Zen 4 and one branch per lane without AVX-512. "register": a register compress and one vector
    store (``llvm.experimental.vector.compress``, LLVM 19+; a branch-free sequence without AVX-512). "lanes" (older
    LLVM): every lane stored at the next free slot, the slot advancing by the lane's mask bit (branch-free).
    """
    name = numba_config.CPU_NAME or llvm_binding.get_host_cpu_name()
    features = (numba_config.CPU_FEATURES or llvm_binding.get_host_cpu_features().flatten()).split(",")
    if "+avx512f" in features and not name.startswith("znver"):
        return "memory"
    return "register" if llvm_binding.llvm_version_info >= (19,) else "lanes"


_COMPRESS = _compress_kind()


def _is_vector_array(array: types.Type, writable: bool = False) -> bool:
    """Whether ``array`` is a numba type the intrinsics can address directly: a C-contiguous 1-D float64 array
    (writable if asked)."""
    return (
        isinstance(array, types.Array)
        and array.ndim == 1
        and array.layout == "C"
        and array.dtype == types.float64
        and (array.mutable or not writable)
    )


def _splat(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """A vector of _LANES copies of the scalar ``value``."""
    vector = ir.VectorType(value.type, _LANES)
    first = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, first, ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES))


def _compress_store(
    builder: ir.IRBuilder,
    context: Any,
    array_type: types.Array,
    array: ir.Value,
    position: ir.Value,
    values: ir.Value,
    mask: ir.Value,
) -> ir.Value:
    """Store the lanes of ``values`` selected by ``mask`` contiguously from ``array[position]``; return their number.
    All _LANES slots from ``position`` on may be written (callers leave room). How: see _COMPRESS.
    """
    data = context.make_array(array_type)(context, builder, array).data
    target = builder.gep(data, [position])
    if _COMPRESS == "memory":
        signature = ir.FunctionType(ir.VoidType(), [values.type, target.type, mask.type])
        store = cgutils.get_or_insert_function(builder.module, signature, f"llvm.masked.compressstore.v{_LANES}f64")
        builder.call(store, [values, target, mask])
    elif _COMPRESS == "register":
        signature = ir.FunctionType(values.type, [values.type, mask.type, values.type])
        compress = cgutils.get_or_insert_function(
            builder.module, signature, f"llvm.experimental.vector.compress.v{_LANES}f64"
        )
        packed = builder.call(compress, [values, mask, ir.Constant(values.type, ir.Undefined)])
        builder.store(packed, builder.bitcast(target, values.type.as_pointer()), align=8)
    else:
        offset = ir.Constant(ir.IntType(64), 0)
        for lane in (ir.Constant(ir.IntType(32), j) for j in range(_LANES)):
            builder.store(builder.extract_element(values, lane), builder.gep(target, [offset]))
            offset = builder.add(offset, builder.zext(builder.extract_element(mask, lane), ir.IntType(64)))
    bits = ir.IntType(_LANES)
    popcount = builder.module.declare_intrinsic("llvm.ctpop", [bits])
    return builder.zext(builder.call(popcount, [builder.bitcast(mask, bits)]), ir.IntType(64))


def _load_lanes(
    builder: ir.IRBuilder, context: Any, array_type: types.Array, array: ir.Value, start: ir.Value
) -> ir.Value:
    """The _LANES float64 values ``array[start:start + _LANES]`` as a vector."""
    data = context.make_array(array_type)(context, builder, array).data
    vector = ir.VectorType(ir.DoubleType(), _LANES)
    return builder.load(builder.bitcast(builder.gep(data, [start]), vector.as_pointer()), align=8)


@intrinsic
def _float_from_bits_fast(typingctx, bits):
    """The float64 whose bit pattern is the int64 ``bits``."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _compress_below_fast(typingctx, source, start, target, position, limit):
    """Append the values of ``source[start:start + _LANES]`` below ``limit`` (NaN is not) to ``target`` from
    ``position`` on, in order; return how many. No bounds checks: the caller guarantees them (uint64 indices)."""
    if not (_is_vector_array(source) and _is_vector_array(target, writable=True)):
        return None
    signature = types.uint64(source, types.uint64, target, types.uint64, types.float64)

    def codegen(context, builder, sig, args):
        source_value, start_value, target_value, position_value, limit_value = args
        values = _load_lanes(builder, context, sig.args[0], source_value, start_value)
        below = builder.fcmp_ordered("<", values, _splat(builder, limit_value))
        return _compress_store(builder, context, sig.args[2], target_value, position_value, values, below)

    return signature, codegen


@intrinsic
def _compress_split_fast(typingctx, source, start, pivot, below, n_below, above, n_above):
    """Append the values of ``source[start:start + _LANES]`` below ``pivot`` to ``below`` from ``n_below`` on and
    those above it to ``above`` from ``n_above`` on; return both counts. Unchecked uint64 indices, as
    :func:`_compress_below_fast`; ``below``/``above`` may be ``source`` itself when writing never passes reading."""
    if not (_is_vector_array(source) and _is_vector_array(below, True) and _is_vector_array(above, True)):
        return None
    index = types.uint64
    signature = types.UniTuple(index, 2)(source, index, types.float64, below, index, above, index)

    def codegen(context, builder, sig, args):
        source_value, start_value, pivot_value, below_value, n_below_value, above_value, n_above_value = args
        values = _load_lanes(builder, context, sig.args[0], source_value, start_value)
        pivots = _splat(builder, pivot_value)
        lower = builder.fcmp_ordered("<", values, pivots)
        higher = builder.fcmp_ordered(">", values, pivots)
        counts = [
            _compress_store(builder, context, sig.args[3], below_value, n_below_value, values, lower),
            _compress_store(builder, context, sig.args[5], above_value, n_above_value, values, higher),
        ]
        return context.make_tuple(builder, sig.return_type, counts)

    return signature, codegen


# ---------------------------------------------------------------------------------------------------------------------
# Compiled building blocks (shared by compute_metrics and the public per-metric functions)
# ---------------------------------------------------------------------------------------------------------------------




# ---------------------------------------------------------------------------------------------------------------------
# The SMA's division
# ---------------------------------------------------------------------------------------------------------------------


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's fma: one instruction on CPUs with FMA, vectorised in loops)."""

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return types.float64(types.float64, types.float64, types.float64), codegen


@jit(nogil=True)
def _divide_in_place_fast(values, start, stop, n):
    """``values[start:stop] /= n``, bit for bit, without dividing.

    ``q = t * (1/n)`` is within an ulp of ``t / n``; the remainder ``t - q * n`` is exact with an FMA, and one
    correction step ``q + remainder * (1/n)`` gives the correctly rounded quotient (Markstein's theorem; a test
    compares with numpy's division bit for bit). Vectorised multiply-adds instead of a division per bar.
    """
    d = float(n)
    reciprocal = 1.0 / d
    u = np.uint64(start)
    end = np.uint64(stop)
    while u < end:
        t = values[u]
        q = t * reciprocal
        remainder = _fma(-q, d, t)
        # no remainder: q is the quotient (the correction would turn -0.0 into 0.0)
        values[u] = q if remainder == 0.0 else _fma(remainder, reciprocal, q)
        u += np.uint64(1)


# ---------------------------------------------------------------------------------------------------------------------
# The plain twins: the same results with numba's public features only
# ---------------------------------------------------------------------------------------------------------------------

_plain = jit(inline="always", error_model="numpy", **NO_REFCOUNT)


@_plain
def _signal_mask_plain(entries, exits, row, column):
    """:func:`_signal_mask_fast`, one signal bar at a time."""
    mask = np.uint32(0)
    for k in range(SIGNAL_LANES):
        at = column + np.uint64(k)
        if entries[row, at] or exits[row, at]:
            mask = np.uint32(mask | np.uint32(1 << k))
    return mask


@_plain
def _lowest_set_bit_plain(mask):
    """:func:`_lowest_set_bit_fast`, one bit at a time."""
    k = 0
    while not (mask >> k) & 1:
        k += 1
    return k


@_plain
def _float_from_bits_plain(bits):
    """:func:`_float_from_bits_fast` by numpy's scalar view."""
    return np.int64(bits).view(np.float64)


@_plain
def _compress_below_plain(source, start, target, position, limit):
    """:func:`_compress_below_fast`, one value at a time."""
    count = np.uint64(0)
    for k in range(_LANES):
        value = source[start + np.uint64(k)]
        if value < limit:
            target[position + count] = value
            count += np.uint64(1)
    return count


@_plain
def _compress_split_plain(source, start, pivot, below, n_below, above, n_above):
    """:func:`_compress_split_fast`, one value at a time (a value is read before any write can reach it)."""
    more_below = np.uint64(0)
    more_above = np.uint64(0)
    for k in range(_LANES):
        value = source[start + np.uint64(k)]
        if value < pivot:
            below[n_below + more_below] = value
            more_below += np.uint64(1)
        elif value > pivot:
            above[n_above + more_above] = value
            more_above += np.uint64(1)
    return more_below, more_above


@jit(nogil=True)
def _divide_in_place_plain(values, start, stop, n):
    """:func:`_divide_in_place_fast` by IEEE division."""
    d = float(n)
    for u in range(start, stop):
        values[u] = values[u] / d


if PORTABLE:
    signal_mask, lowest_set_bit, float_from_bits = _signal_mask_plain, _lowest_set_bit_plain, _float_from_bits_plain
    compress_below, compress_split = _compress_below_plain, _compress_split_plain
    divide_in_place = _divide_in_place_plain
else:
    signal_mask, lowest_set_bit, float_from_bits = _signal_mask_fast, _lowest_set_bit_fast, _float_from_bits_fast
    compress_below, compress_split = _compress_below_fast, _compress_split_fast
    divide_in_place = _divide_in_place_fast
