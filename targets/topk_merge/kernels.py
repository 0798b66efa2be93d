"""topk-merge kernels: the one file the autoresearch loop may edit.

A compiled (numba, one thread, no fastmath), faithful port of the operator Lance runs to merge its
per-partition ANN results: DataFusion's TopK (``SortExec`` with a fetch).
  - lancedb/lance d2039d75 (1.0.0-beta.1), rust/lance/src/dataset/scanner.rs ``Scanner::ann``:
    every probed partition's (and index delta's) results go into ``SortExec::new([_distance ASC
    NULLS LAST, _rowid ASC NULLS LAST]).with_fetch(k * refine_factor)``; each partition's result
    is one RecordBatch of at most k' rows in the internal order of the bounded max-heap of
    rust/lance-index/src/vector/flat/index.rs ``FlatIndex::search`` ("we don't need to sort the
    results ... there's a SortExec node").
  - DataFusion 50 (Lance's pin), datafusion/physical-plan/src/topk/mod.rs: ``TopK::insert_batch``
    once per batch (run): the dynamic filter ``_distance < t OR (_distance = t AND _rowid < r)``
    against the heap's maximum (t, r), evaluated over the whole batch (arrow compares floats by
    ``total_cmp``); the surviving rows' sort keys converted to arrow's row format (arrow-row
    fixed.rs: an f32 as ``bits ^ ((bits >> 31) as u32 >> 1)`` with the sign bit flipped, big
    endian, so byte order is IEEE totalOrder: -NaN < -inf < ... < -0.0 < +0.0 < ... < +inf < +NaN;
    then the u64 row id, big endian); ``find_new_topk_items``: a row is added unless the heap
    holds k rows and row >= its maximum; ``TopKHeap::add``: ``BinaryHeap::pop`` then ``push``
    (Rust std's sift_down_to_bottom + sift_up, and sift_up); the filter's threshold is updated
    after each batch that changed the heap. ``TopK::emit`` -> ``TopKHeap::emit_with_state``:
    ``into_sorted_vec`` (std's heap sort, sift_down_range) and ``interleave_record_batch`` (a
    gather of each row's values from its batch). ``maybe_compact`` never fires at these sizes (it
    waits for 20 x batch_size(8192) + k unused rows) and is left out, as is memory accounting.
Each query's rows reach the heap run by run, in the order the runs are listed; the output is the
min(k, rows) smallest (totalOrder(distance), row id) pairs, ascending, values copied bit for bit.
No tuning beyond upstream: this is the bar a keep must beat.
"""

import numpy as np
from numba import njit

SIGN = np.uint32(0x80000000)


@njit(cache=True)
def _row_key(bits):
    # arrow-row's f32 encoding as one unsigned integer (its 4 big-endian bytes compare the same way).
    s = np.int32(bits)
    flipped = s ^ np.int32(np.uint32(s >> 31) >> np.uint32(1))
    return np.uint32(flipped) ^ SIGN


@njit(cache=True)
def _greater(ka, ra, kb, rb):
    # TopKRow::cmp: memcmp of the row bytes = (key, row id) lexicographically.
    return ka > kb or (ka == kb and ra > rb)


@njit(cache=True)
def _sift_up(hk, hr, hs, start, pos):
    # std BinaryHeap::sift_up: the hole rises while its element is greater than the parent.
    k, r, s = hk[pos], hr[pos], hs[pos]
    while pos > start:
        parent = (pos - 1) // 2
        if not _greater(k, r, hk[parent], hr[parent]):
            break
        hk[pos], hr[pos], hs[pos] = hk[parent], hr[parent], hs[parent]
        pos = parent
    hk[pos], hr[pos], hs[pos] = k, r, s


@njit(cache=True)
def _sift_down_to_bottom(hk, hr, hs, end):
    # std BinaryHeap::sift_down_to_bottom(0): the hole goes to a leaf along the greater children,
    # then the element sifts up from there.
    k, r, s = hk[0], hr[0], hs[0]
    pos = 0
    child = 1
    while child <= end - 2:
        if not _greater(hk[child], hr[child], hk[child + 1], hr[child + 1]):
            child += 1
        hk[pos], hr[pos], hs[pos] = hk[child], hr[child], hs[child]
        pos = child
        child = 2 * pos + 1
    if child == end - 1:
        hk[pos], hr[pos], hs[pos] = hk[child], hr[child], hs[child]
        pos = child
    hk[pos], hr[pos], hs[pos] = k, r, s
    _sift_up(hk, hr, hs, 0, pos)


@njit(cache=True)
def _sift_down_range(hk, hr, hs, end):
    # std BinaryHeap::sift_down_range(0, end), as into_sorted_vec uses it.
    k, r, s = hk[0], hr[0], hs[0]
    pos = 0
    child = 1
    while child <= end - 2:
        if not _greater(hk[child], hr[child], hk[child + 1], hr[child + 1]):
            child += 1
        if not _greater(hk[child], hr[child], k, r):
            hk[pos], hr[pos], hs[pos] = k, r, s
            return
        hk[pos], hr[pos], hs[pos] = hk[child], hr[child], hs[child]
        pos = child
        child = 2 * pos + 1
    if child == end - 1 and _greater(hk[child], hr[child], k, r):
        hk[pos], hr[pos], hs[pos] = hk[child], hr[child], hs[child]
        pos = child
    hk[pos], hr[pos], hs[pos] = k, r, s


@njit(cache=True)
def _merge_one(bits, row_ids, lengths, runs, k, out_bits, out_rows, hk, hr, hs, sel, rk, rr):
    """One query: every run inserted as one batch, then emitted. Returns the row count."""
    width = bits.shape[1]
    size = 0
    have_threshold = False
    tk = np.uint32(0)
    tr = np.uint64(0)
    for j in range(runs.size):
        b = runs[j]
        n = lengths[b]
        # The dynamic filter over the whole batch: rows strictly below the threshold row.
        count = 0
        for i in range(n):
            if not have_threshold:
                sel[count] = i
                count += 1
            else:
                key = _row_key(bits[b, i])
                if key < tk or (key == tk and row_ids[b, i] < tr):
                    sel[count] = i
                    count += 1
        if count == 0:
            continue
        # Row conversion of the selected rows.
        for c in range(count):
            i = sel[c]
            rk[c] = _row_key(bits[b, i])
            rr[c] = row_ids[b, i]
        # find_new_topk_items.
        replacements = 0
        for c in range(count):
            key, rid = rk[c], rr[c]
            if size == k and not _greater(hk[0], hr[0], key, rid):
                continue                       # row >= the heap's maximum: not a new top-k row
            src = b * width + sel[c]
            if size == k:                      # pop, then push
                size -= 1
                hk[0], hr[0], hs[0] = hk[size], hr[size], hs[size]
                if size > 0:
                    _sift_down_to_bottom(hk, hr, hs, size)
            hk[size], hr[size], hs[size] = key, rid, src
            _sift_up(hk, hr, hs, 0, size)
            size += 1
            replacements += 1
        if replacements > 0 and size == k:     # update_filter: the heap's maximum
            have_threshold = True
            tk, tr = hk[0], hr[0]
    # emit: into_sorted_vec, then the gather.
    end = size
    while end > 1:
        end -= 1
        hk[0], hk[end] = hk[end], hk[0]
        hr[0], hr[end] = hr[end], hr[0]
        hs[0], hs[end] = hs[end], hs[0]
        _sift_down_range(hk, hr, hs, end)
    for i in range(size):
        b, i_in = hs[i] // width, hs[i] % width
        out_bits[i] = bits[b, i_in]
        out_rows[i] = row_ids[b, i_in]
    return size


@njit(cache=True)
def _merge_batch(bits, row_ids, lengths, runs, k, out_bits, out_rows, out_counts):
    width = bits.shape[1]
    hk = np.empty(k, dtype=np.uint32)
    hr = np.empty(k, dtype=np.uint64)
    hs = np.empty(k, dtype=np.int64)
    sel = np.empty(width, dtype=np.int64)
    rk = np.empty(width, dtype=np.uint32)
    rr = np.empty(width, dtype=np.uint64)
    for q in range(runs.shape[0]):
        out_counts[q] = _merge_one(bits, row_ids, lengths, runs[q], k, out_bits[q], out_rows[q],
                                   hk, hr, hs, sel, rk, rr)


class TopkMergeKernel:
    def __init__(self, k):
        self.k = k

    def merge(self, dists, row_ids, lengths, runs, out_dists, out_row_ids, out_counts):
        # Bits in, bits out: distances are copied, never computed, so NaN payloads survive.
        _merge_batch(dists.view(np.uint32), row_ids, lengths, runs, self.k, out_dists.view(np.uint32),
                     out_row_ids, out_counts)
