"""take kernels: the one file the autoresearch loop may edit.

A compiled (numba, one thread) port of the CPU part of Lance's ``Dataset::take_rows``, as read
in rust/lance/src/dataset/take.rs at lancedb/lance d2039d750 (2025-11-15):

  - ``check_row_addrs``: one pass; ``sorted`` = every address greater than the previous,
    ``contiguous`` = every address the previous + 1 and in the first address's fragment.
  - ``do_take_rows``, sorted path (``row_addr_stats.sorted``, contiguous included): split the
    request into runs of one fragment (``addr >> 32``), read each fragment's u32 offsets in order,
    concatenate: no remap (the returned rows are already in request order).
  - ``do_take_rows``, unsorted path: ``sort()`` + ``dedup()`` a copy of the request, group by
    fragment (``BTreeMap<u32, Vec<u32>>``: ascending fragment ids, offsets in sorted order), read
    the fragments that exist (``_rowaddr`` returned with the rows), then remap: a
    ``HashMap<u64, u64>`` from each returned address to its position, looked up for every requested
    address in request order, ``filter_map`` dropping the misses (deleted rows, gone fragments).
    This is the newer upstream remap as the project's research note records it (commit 7c800fd0,
    a ``HashMap<u64, u64>``; that commit is not in the local mirror and was not read here);
    d2039d750 still has ``returned.iter().position(|id| id == o)``, O(M*U), which at M = 100k is
    ~10^10 compares per call: not a bar worth beating. The hash map here is numba's
    typed ``Dict`` (a hash table of uint64 -> int64, as Rust's ``HashMap``, SipHash aside).
  - ``take_struct_array`` -> ``arrow_select::take::take`` per column: a primitive gather
    (``take_native``: ``values[idx]`` per index), FixedSizeList (``take_fixed_size_list``: the
    child values at ``idx * dim + j``, row by row), and utf8 (``take_bytes``: a first pass
    summing lengths into new i32 offsets from 0, then per row ``extend_from_slice`` of its bytes).

The fragment read itself (file I/O and decode) is not ported: the columns are already decoded
and ``__init__`` gets them; "reading" a unique address is finding its dataset row (the
fragment's first row + offset) or nothing (no such fragment, offset past its end, a deleted
row). The columns are then gathered through ``returned_row[remap[i]]``: the same values as
Lance's ``take(one_batch, remap)`` without materialising the concatenated batch (which is the
decoder's copy, not this kernel's).
"""

import numpy as np
from numba import njit, types
from numba.typed import Dict

SHIFT = np.uint64(32)
LOW = np.uint64(0xFFFFFFFF)


@njit(cache=True)
def _check_row_addrs(row_addrs):
    sorted_ = True
    contiguous = True
    if row_addrs.size == 0:
        return sorted_, contiguous
    last = row_addrs[0]
    first_frag = row_addrs[0] >> SHIFT
    for i in range(1, row_addrs.size):
        addr = row_addrs[i]
        sorted_ &= addr > last
        contiguous &= addr == last + np.uint64(1)
        contiguous &= (addr >> SHIFT) == first_frag
        last = addr
    return sorted_, contiguous


@njit(cache=True)
def _read(frag_ids, frag_rows, deleted, uniq, returned_addrs, returned_rows):
    """The fragment reads of the sorted unique addresses, fragment by fragment: each address the
    read returns (its dataset row), in order. Returns (groups' fragment ids, bounds, count)."""
    n = uniq.size
    g_ids = np.empty(n, dtype=np.uint32)
    g_bounds = np.empty(n + 1, dtype=np.int64)
    g = 0
    count = 0
    i = 0
    while i < n:
        frag = uniq[i] >> SHIFT
        j = i
        while j < n and (uniq[j] >> SHIFT) == frag:
            j += 1
        g_ids[g] = np.uint32(frag)
        g_bounds[g] = i
        g += 1
        # fragments.into_iter().filter_map(|f| row_addrs_per_fragment.remove(&f.id())): linear
        k = -1
        for f in range(frag_ids.size):
            if np.uint64(frag_ids[f]) == frag:
                k = f
        if k >= 0:
            first = frag_rows[k]
            length = np.uint64(frag_rows[k + 1] - first)
            for t in range(i, j):
                offset = uniq[t] & LOW
                if offset < length:
                    row = first + np.int64(offset)
                    if deleted[row] == 0:
                        returned_addrs[count] = uniq[t]
                        returned_rows[count] = row
                        count += 1
        i = j
    g_bounds[g] = n
    return g_ids[:g], g_bounds[:g + 1], count


@njit(cache=True)
def _plan(row_addrs, frag_ids, frag_rows, deleted, out_flags, out_uniq, out_frag_ids, out_frag_bounds, out_remap):
    """The plan; returns the dataset rows to gather, in request order (M' of them)."""
    sorted_, contiguous = _check_row_addrs(row_addrs)
    out_flags[0] = np.uint8(sorted_)
    out_flags[1] = np.uint8(contiguous)
    if sorted_:
        uniq = row_addrs.copy()                     # strictly increasing: already unique
    else:
        s = np.sort(row_addrs)                      # sorted_row_addrs.sort()
        uniq = np.empty(s.size, dtype=np.uint64)    # .dedup()
        u = 0
        for i in range(s.size):
            if u == 0 or s[i] != uniq[u - 1]:
                uniq[u] = s[i]
                u += 1
        uniq = uniq[:u]
    returned_addrs = np.empty(uniq.size, dtype=np.uint64)
    returned_rows = np.empty(uniq.size, dtype=np.int64)
    g_ids, g_bounds, count = _read(frag_ids, frag_rows, deleted, uniq, returned_addrs, returned_rows)
    out_uniq[:] = uniq
    out_frag_ids[:] = g_ids
    out_frag_bounds[:] = g_bounds
    rows = np.empty(row_addrs.size, dtype=np.int64)
    if sorted_:
        # concat_batches of the per-fragment reads: already in request order, no remap
        for i in range(count):
            out_remap[i] = np.uint64(i)
            rows[i] = returned_rows[i]
        return rows[:count]
    # HashMap<u64, u64>: returned address -> its position in one_batch
    positions = Dict.empty(key_type=types.uint64, value_type=types.int64)
    for i in range(count):
        positions[returned_addrs[i]] = i
    m = 0
    for i in range(row_addrs.size):                 # row_addrs.iter().filter_map(...)
        addr = row_addrs[i]
        if addr in positions:
            p = positions[addr]
            out_remap[m] = np.uint64(p)
            rows[m] = returned_rows[p]
            m += 1
    return rows[:m]


@njit(cache=True)
def _take_primitive(values, rows, out):
    for i in range(rows.size):
        out[i] = values[rows[i]]


@njit(cache=True)
def _take_fixed_size_list(values, rows, out):
    dim = values.shape[1]
    src = values.reshape(-1)
    dst = out.reshape(-1)
    p = 0
    for i in range(rows.size):
        start = rows[i] * dim
        for j in range(dim):
            dst[p] = src[start + j]
            p += 1


@njit(cache=True)
def _take_bytes(offsets, data, rows, out_offsets, out_bytes):
    # first pass: the new offsets (i32, from 0)
    out_offsets[0] = 0
    total = 0
    for i in range(rows.size):
        r = rows[i]
        total += offsets[r + 1] - offsets[r]
        out_offsets[i + 1] = total
    # second pass: each row's bytes (values.extend_from_slice)
    p = 0
    for i in range(rows.size):
        r = rows[i]
        start = offsets[r]
        end = offsets[r + 1]
        for b in range(start, end):
            out_bytes[p] = data[b]
            p += 1


class Take:
    def __init__(self, frag_ids, frag_rows, deleted, i64, vec, str_offsets, str_bytes):
        self.frag_ids = frag_ids
        self.frag_rows = frag_rows
        self.deleted = deleted
        self.i64 = i64
        self.vec = vec
        self.str_offsets = str_offsets
        self.str_bytes = str_bytes

    def take(self, row_addrs, out):
        rows = _plan(row_addrs, self.frag_ids, self.frag_rows, self.deleted, out["flags"], out["uniq_addrs"],
                     out["frag_ids"], out["frag_bounds"], out["remap"])
        _take_primitive(self.i64, rows, out["i64"])
        _take_fixed_size_list(self.vec, rows, out["vec"])
        _take_bytes(self.str_offsets, self.str_bytes, rows, out["str_offsets"], out["str_bytes"])
