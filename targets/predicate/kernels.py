"""predicate baseline: DataFusion's FilterExec as Lance's scan runs it, ported to numba.

Lance owns no predicate kernel: ``LanceFilterExec`` (rust/lance/src/io/exec/filter.rs, lancedb/lance
d2039d750) wraps DataFusion's ``FilterExec``, which evaluates the physical expression into a
``BooleanArray`` with arrow-rs kernels and then calls ``filter_record_batch`` with NULL treated as
false. This file ports those arrow-rs loops (apache/arrow-rs cd7c6b83a), stage by stage, each stage a
full pass producing a full-length result as upstream does:

* comparisons with a scalar: arrow-ord/src/cmp.rs ``compare_op`` -> ``apply_op`` -> ``collect_bool``:
  64 rows packed per u64 word; ``<=`` is ``!(lit < v)``, ``>`` is ``lit < v``, ``>=`` is ``!(v < lit)``,
  ``!=`` is ``!(v == lit)`` (the ``neg`` flag); floats compare with ``f32::total_cmp`` (IEEE-754
  totalOrder: the bits as i32, xor'd with ``(bits >> 31) as u32 >> 1``). The result's nulls are the
  column's (the scalar is never null).
* ``IN`` (DataFusion physical-expr/src/expressions/in_list.rs, the static-filter path): a hash set
  of the list, probed per row; result nulls are the column's.
* ``IS NULL`` / ``IS NOT NULL``: the validity bitmap, negated or not; no nulls.
* ``AND`` / ``OR``: arrow-arith/src/boolean.rs ``and_kleene`` / ``or_kleene``: values ``l & r`` /
  ``l | r``; validity (a, b = left valid, value; c, d = right valid, value) ``(a | c & !d) & (c | a & !b)``
  for AND, ``(a | c & d) & (c | a & b)`` for OR, word by word. ``NOT``: arrow-arith ``not``: ``!values``.
* DataFusion filter.rs ``batch_filter`` -> arrow-select ``prep_null_mask_filter`` (values & validity),
  then arrow-select/src/filter.rs ``filter_record_batch`` -> ``FilterBuilder::optimize``: the count
  (popcount), the strategy (``IterationStrategy::default_strategy``: none, all, ``SlicesIterator``
  above 0.8 selectivity, else ``IndexIterator``) and per column ``filter_primitive`` / ``filter_bytes``
  (offsets pass, then values pass) and ``filter_bits`` for the null buffer.

The API (target.KERNEL_API): ``PredicateFilter(program)``; ``filter(...)`` returns the selected count.
"""

import numpy as np
from numba import njit

LT, LE, GT, GE, EQ, NE, IN, IS_NULL, IS_NOT_NULL, AND, OR, NOT = range(12)
ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


@njit(cache=True)
def _f32_key(v):
    # f32::total_cmp: i32 bits, negative values with their 31 low bits flipped
    bits = np.int32(np.float32(v).view(np.int32))
    return np.int32(bits ^ np.int32(np.uint32(np.int64(bits) >> 31 & 0xFFFFFFFF) >> np.uint32(1)))


@njit(cache=True)
def _collect_cmp(vals, lit, is_lt, swap, neg, n, out):
    # cmp.rs collect_bool: per 64 rows one packed word; f(i) = is_lt/is_eq(l, r) or swapped
    nwords = (n + 63) // 64
    for w in range(nwords):
        base = w * 64
        m = min(64, n - base)
        packed = np.uint64(0)
        for bit in range(m):
            v = vals[base + bit]
            if is_lt:
                r = (lit < v) if swap else (v < lit)
            else:
                r = v == lit
            packed |= np.uint64(r) << np.uint64(bit)
        if neg:
            packed = ~packed
        out[w] = packed


@njit(cache=True)
def _float_keys(vals, n):
    keys = np.empty(n, dtype=np.int32)
    for i in range(n):
        keys[i] = _f32_key(vals[i])
    return keys


@njit(cache=True)
def _collect_cmp_f32(vals, lit, is_lt, swap, neg, n, out):
    # the same loop over f32 with total_cmp's key per value (ArrayOrd for f32: is_lt = total_cmp().is_lt())
    klit = _f32_key(lit)
    nwords = (n + 63) // 64
    for w in range(nwords):
        base = w * 64
        m = min(64, n - base)
        packed = np.uint64(0)
        for bit in range(m):
            k = _f32_key(vals[base + bit])
            if is_lt:
                r = (klit < k) if swap else (k < klit)
            else:
                r = k == klit
            packed |= np.uint64(r) << np.uint64(bit)
        if neg:
            packed = ~packed
        out[w] = packed


@njit(cache=True)
def _hash(v, mask):
    return np.int64((np.uint64(v) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & mask


@njit(cache=True)
def _in_list(vals, lits, n, out):
    # in_list.rs static filter: a hash set of the list, one probe per row, collected 64 per word
    size = 16
    while size < 4 * lits.size:
        size *= 2
    mask = size - 1
    table = np.empty(size, dtype=np.int64)
    used = np.zeros(size, dtype=np.bool_)
    for j in range(lits.size):
        h = _hash(lits[j], mask)
        while used[h] and table[h] != lits[j]:
            h = (h + 1) & mask
        used[h] = True
        table[h] = lits[j]
    nwords = (n + 63) // 64
    for w in range(nwords):
        base = w * 64
        m = min(64, n - base)
        packed = np.uint64(0)
        for bit in range(m):
            v = np.int64(vals[base + bit])
            h = _hash(v, mask)
            hit = False
            while used[h]:
                if table[h] == v:
                    hit = True
                    break
                h = (h + 1) & mask
            packed |= np.uint64(hit) << np.uint64(bit)
        out[w] = packed


@njit(cache=True)
def _evaluate(program, a, b, x, y, validity, lits_i, lits_f, n):
    # PhysicalExpr::evaluate, node by node: each node a full-length BooleanArray (values, validity)
    nwords = (n + 63) // 64
    k = program.shape[0]
    vals = np.empty((k, nwords), dtype=np.uint64)
    valid = np.empty((k, nwords), dtype=np.uint64)
    sp = 0
    for p in range(k):
        op = program[p, 0]
        col = program[p, 1]
        slot = program[p, 2]
        if op <= NE:
            is_lt = op == LT or op == LE or op == GT or op == GE
            swap = op == LE or op == GT
            neg = op == LE or op == GE or op == NE
            if col == 0:
                _collect_cmp(a, lits_i[slot], is_lt, swap, neg, n, vals[sp])
            elif col == 1:
                _collect_cmp(b, np.int32(lits_i[slot]), is_lt, swap, neg, n, vals[sp])
            elif col == 2:
                _collect_cmp_f32(x, lits_f[slot], is_lt, swap, neg, n, vals[sp])
            else:
                _collect_cmp_f32(y, lits_f[slot], is_lt, swap, neg, n, vals[sp])
            valid[sp, :] = validity[col, :]
            sp += 1
        elif op == IN:
            lits = lits_i[slot:slot + program[p, 3]]
            if col == 0:
                _in_list(a, lits, n, vals[sp])
            else:
                _in_list(b, lits, n, vals[sp])
            valid[sp, :] = validity[col, :]
            sp += 1
        elif op == IS_NULL or op == IS_NOT_NULL:
            for w in range(nwords):
                vals[sp, w] = ~validity[col, w] if op == IS_NULL else validity[col, w]
                valid[sp, w] = ALL_ONES
            sp += 1
        elif op == NOT:
            for w in range(nwords):
                vals[sp - 1, w] = ~vals[sp - 1, w]
        else:
            l = sp - 2
            r = sp - 1
            for w in range(nwords):
                av = valid[l, w]
                bv = vals[l, w]
                cv = valid[r, w]
                dv = vals[r, w]
                if op == AND:
                    vals[l, w] = bv & dv
                    valid[l, w] = (av | (cv & ~dv)) & (cv | (av & ~bv))
                else:
                    vals[l, w] = bv | dv
                    valid[l, w] = (av | (cv & dv)) & (cv | (av & bv))
            sp -= 1
    return vals[0], valid[0]


@njit(cache=True)
def _prep_null_mask(vals, valid, n):
    # arrow-select prep_null_mask_filter: values & validity (and the bits past len cleared)
    nwords = (n + 63) // 64
    mask = np.empty(nwords, dtype=np.uint64)
    for w in range(nwords):
        mask[w] = vals[w] & valid[w]
    if n % 64:
        mask[nwords - 1] &= (np.uint64(1) << np.uint64(n % 64)) - np.uint64(1)
    return mask


@njit(cache=True)
def _popcount(w):
    w = w - ((w >> np.uint64(1)) & np.uint64(0x5555555555555555))
    w = (w & np.uint64(0x3333333333333333)) + ((w >> np.uint64(2)) & np.uint64(0x3333333333333333))
    w = (w + (w >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((w * np.uint64(0x0101010101010101)) >> np.uint64(56))


DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
DEBRUIJN_TABLE = np.array([0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4, 62, 55, 59, 36, 53, 51, 43,
                           22, 45, 39, 33, 30, 24, 18, 12, 5, 63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32,
                           23, 11, 46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6], dtype=np.int64)


@njit(cache=True)
def _trailing_zeros(w):
    # u64::trailing_zeros (one tzcnt upstream): the isolated lowest bit's de Bruijn index
    return DEBRUIJN_TABLE[np.int64(((w & (~w + np.uint64(1))) * DEBRUIJN) >> np.uint64(58))]


@njit(cache=True)
def _indices(mask, count):
    # IndexIterator: the set bits, lowest first (trailing_zeros, clear lowest bit)
    idx = np.empty(count, dtype=np.int64)
    j = 0
    for w in range(mask.size):
        word = mask[w]
        while word != 0:
            idx[j] = w * 64 + _trailing_zeros(word)
            word &= word - np.uint64(1)
            j += 1
    return idx


@njit(cache=True)
def _slices(mask, n):
    # SlicesIterator: runs of set bits as (start, end)
    starts = np.empty(n // 2 + 1, dtype=np.int64)
    ends = np.empty(n // 2 + 1, dtype=np.int64)
    # (word-level skips over all-zero and all-one words, as SlicesIterator's trailing_zeros/ones do)
    k = 0
    i = 0
    s = -1
    while i < n:
        word = mask[i >> 6]
        if (i & 63) == 0 and i + 64 <= n and (word == 0 or word == ALL_ONES):
            if word == 0:
                if s >= 0:
                    starts[k] = s
                    ends[k] = i
                    k += 1
                    s = -1
            elif s < 0:
                s = i
            i += 64
            continue
        if (word >> np.uint64(i & 63)) & np.uint64(1):
            if s < 0:
                s = i
        elif s >= 0:
            starts[k] = s
            ends[k] = i
            k += 1
            s = -1
        i += 1
    if s >= 0:
        starts[k] = s
        ends[k] = n
        k += 1
    return starts[:k], ends[:k]


@njit(cache=True)
def _filter_native_idx(src, idx, dst):
    for j in range(idx.size):
        dst[j] = src[idx[j]]


@njit(cache=True)
def _filter_native_slices(src, starts, ends, dst):
    o = 0
    for s in range(starts.size):
        for i in range(starts[s], ends[s]):
            dst[o] = src[i]
            o += 1


@njit(cache=True)
def _filter_bits_idx(bits, idx, dst):
    # filter_bits via the index iterator: one bit appended per selected row (padding bits 0)
    nw = (idx.size + 63) // 64
    for w in range(nw):
        dst[w] = np.uint64(0)
    for j in range(idx.size):
        i = idx[j]
        if (bits[i >> 6] >> np.uint64(i & 63)) & np.uint64(1):
            dst[j >> 6] |= np.uint64(1) << np.uint64(j & 63)


@njit(cache=True)
def _filter_bits_slices(bits, starts, ends, count, dst):
    nw = (count + 63) // 64
    for w in range(nw):
        dst[w] = np.uint64(0)
    o = 0
    for s in range(starts.size):
        for i in range(starts[s], ends[s]):
            if (bits[i >> 6] >> np.uint64(i & 63)) & np.uint64(1):
                dst[o >> 6] |= np.uint64(1) << np.uint64(o & 63)
            o += 1


@njit(cache=True)
def _filter_bytes_idx(src_off, src_val, idx, dst_off, dst_val):
    # filter_bytes, IndexIterator: extend_offsets_idx, then extend_idx
    cur = np.int32(0)
    dst_off[0] = cur
    for j in range(idx.size):
        i = idx[j]
        cur += src_off[i + 1] - src_off[i]
        dst_off[j + 1] = cur
    o = 0
    for j in range(idx.size):                          # extend_from_slice: one copy per row
        i = idx[j]
        for p in range(np.int64(src_off[i]), np.int64(src_off[i + 1])):
            dst_val[o] = src_val[p]
            o += 1


@njit(cache=True)
def _filter_bytes_slices(src_off, src_val, starts, ends, dst_off, dst_val):
    # filter_bytes, SlicesIterator: extend_offsets_slices, then extend_slices (one copy per run)
    cur = np.int32(0)
    dst_off[0] = cur
    o = 1
    for s in range(starts.size):
        for i in range(starts[s], ends[s]):
            cur += src_off[i + 1] - src_off[i]
            dst_off[o] = cur
            o += 1
    q = 0
    for s in range(starts.size):                       # extend_from_slice: one copy per run
        v0 = np.int64(src_off[starts[s]])
        v1 = np.int64(src_off[ends[s]])
        for p in range(v0, v1):
            dst_val[q] = src_val[p]
            q += 1


@njit(cache=True)
def _filter_batch(mask, n, a, b, x, y, s_off, s_val, validity,
                  out_a, out_b, out_x, out_y, out_off, out_val, out_valid):
    count = 0
    for w in range(mask.size):
        count += _popcount(mask[w])
    if count == 0:                                     # IterationStrategy::None: empty columns
        out_off[0] = 0
        return 0
    if count == n or count / n > 0.8:                  # All (a copy of each column) or SlicesIterator
        if count == n:
            starts = np.zeros(1, dtype=np.int64)
            ends = np.full(1, n, dtype=np.int64)
        else:
            starts, ends = _slices(mask, n)
        _filter_native_slices(a, starts, ends, out_a)
        _filter_native_slices(b, starts, ends, out_b)
        _filter_native_slices(x, starts, ends, out_x)
        _filter_native_slices(y, starts, ends, out_y)
        _filter_bytes_slices(s_off, s_val, starts, ends, out_off, out_val)
        for c in range(5):
            _filter_bits_slices(validity[c], starts, ends, count, out_valid[c])
        return count
    idx = _indices(mask, count)                        # IndexIterator
    _filter_native_idx(a, idx, out_a)
    _filter_native_idx(b, idx, out_b)
    _filter_native_idx(x, idx, out_x)
    _filter_native_idx(y, idx, out_y)
    _filter_bytes_idx(s_off, s_val, idx, out_off, out_val)
    for c in range(5):
        _filter_bits_idx(validity[c], idx, out_valid[c])
    return count


class PredicateFilter:
    def __init__(self, program):
        self.program = np.ascontiguousarray(program)

    def filter(self, a, b, x, y, s_offsets, s_bytes, validity, lits_i, lits_f,
               out_a, out_b, out_x, out_y, out_s_offsets, out_s_bytes, out_validity):
        n = a.size
        if n == 0:
            out_s_offsets[0] = 0
            return 0
        vals, valid = _evaluate(self.program, a, b, x, y, validity, lits_i, lits_f, n)
        mask = _prep_null_mask(vals, valid, n)
        return _filter_batch(mask, n, a, b, x, y, s_offsets, s_bytes, validity,
                             out_a, out_b, out_x, out_y, out_s_offsets, out_s_bytes, out_validity)
