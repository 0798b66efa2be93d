"""posting-intersect kernels: the one file the autoresearch loop may edit.

A compiled, faithful port of how Lance answers a full-text AND (every term must match) over its
block-compressed posting lists, at the point where no top-k floor prunes anything yet (threshold
0: a query without a limit, or before the heap fills), one thread, numba. Read at
lance-format/lance (formerly lancedb/lance) main after PRs #7624/#7625 (2026-07), the stored
snapshot of rust/lance-index/src/scalar/inverted/wand.rs that defines `BulkAndMode` (the code
search index does not expose its commit); the 128-doc block size is builder.rs `BLOCK_SIZE`
(BitPacker4x::BLOCK_LEN) at lancedb/lance d2039d75.
  - `Wand::new`: clauses sorted by cost (posting length), the rarest first.
  - `Wand::search` -> `BulkAndMode::Auto.enabled_for(n)`: 2 or 3 clauses take the bulk path,
    every other width the classic leapfrog.
  - `Wand::and_bulk_search` (bulk): target = the largest first doc; per window every clause's
    block holding the target is found with `PostingIterator::block_idx_for_doc` (up to
    LINEAR_BLOCK_SKIP_LIMIT = 8 linear steps over the block first-doc sidecar, then a binary
    search), the window ends at the nearest next-block first doc - 1 across clauses, each block is
    sliced to [target, window end] with two `partition_point`s (an empty slice skips the window, or
    ends the search when that clause is exhausted), and the slices are intersected by
    `merge_window_2` / `merge_window_3` with the AVX2 `find_next_geq` catch-up (8 lanes compared at
    once, the count below the target is the offset; scalar for the last < 8); then target = window
    end + 1.
  - `Wand::next_and_candidate` (classic, 4+ clauses): the rarest clause leads; every other clause
    is advanced with `PostingIterator::next(doc)` (block_idx_for_doc from the current block, then
    a `partition_point` in each block, crossing blocks); a clause past the doc moves the lead to
    it.
Lance decompresses a block (bit-unpacking) when a clause first touches it; here the lists arrive
decompressed and each list's block first-doc sidecar is built in __init__ (Lance stores it in the
index). Each query's list j is index list terms[q, j] with shifts[q, j] added to every doc id; the
loops compare stored ids against targets taken into that list's own ids (target - shift), which is
Lance's comparison exactly. No tuning beyond upstream's loops: this is the bar a keep must beat.
"""

import numpy as np
from numba import njit

BLOCK_SHIFT = 7                   # 128-doc blocks (builder.rs BLOCK_SIZE)
BLOCK = 1 << BLOCK_SHIFT
LINEAR_BLOCK_SKIP_LIMIT = 8       # wand.rs
BULK_MAX_CLAUSES = 3              # BulkAndMode::Auto: bulk for 2 or 3 clauses
GEQ_LANES = 8                     # find_next_geq_avx2: one 256-bit compare of 8 u32
TERMINATED = 1 << 62              # TERMINATED_DOC_ID (u64::MAX upstream)


@njit(cache=True)
def _sidecars(doc_ids, list_offsets, first_docs, block_offsets):
    # Each block's first doc id (Lance: `block_least_doc_id`, stored per block in the index).
    for t in range(list_offsets.size - 1):
        start, n = list_offsets[t], list_offsets[t + 1] - list_offsets[t]
        base = block_offsets[t]
        for b in range((n + BLOCK - 1) >> BLOCK_SHIFT):
            first_docs[base + b] = doc_ids[start + (b << BLOCK_SHIFT)]


@njit(cache=True)
def _partition_point(docs, lo, hi, value, or_equal):
    # Rust slice::partition_point(|d| d < value) (or d <= value): binary_search_by's loop, as a
    # count of the leading elements that satisfy the predicate.
    size = hi - lo
    if size == 0:
        return 0
    base = lo
    while size > 1:
        half = size // 2
        mid = base + half
        d = np.int64(docs[mid])
        if d < value or (or_equal and d == value):
            base = mid
        size -= half
    d = np.int64(docs[base])
    return base - lo + (1 if (d < value or (or_equal and d == value)) else 0)


@njit(cache=True)
def _find_next_geq(docs, pos, end, target):
    # find_next_geq_avx2: 8 lanes at a time, lanes below the target are a prefix of the sorted
    # lanes, so their count is the offset (trailing_ones of the movemask); scalar tail.
    while pos + GEQ_LANES <= end:
        below = 0
        for lane in range(GEQ_LANES):
            if np.int64(docs[pos + lane]) < target:
                below += 1
        if below != GEQ_LANES:
            return pos + below
        pos += GEQ_LANES
    while pos < end and np.int64(docs[pos]) < target:
        pos += 1
    return pos


@njit(cache=True)
def _block_idx_for_doc(first_docs, fbase, nblocks, block_idx, least):
    # PostingIterator::block_idx_for_doc (no impact skip data): linear steps, then binary search.
    linear = 0
    while block_idx + 1 < nblocks and linear < LINEAR_BLOCK_SKIP_LIMIT:
        if np.int64(first_docs[fbase + block_idx + 1]) > least:
            return block_idx
        block_idx += 1
        linear += 1
    if block_idx + 1 >= nblocks:
        return block_idx
    left, right = block_idx + 1, nblocks
    while left < right:
        mid = left + (right - left) // 2
        if np.int64(first_docs[fbase + mid]) <= least:
            left = mid + 1
        else:
            right = mid
    return left - 1


@njit(cache=True)
def _merge_window_2(docs, pos, end, shift, out, o):
    # merge_window_2 with the threshold at -inf (no frequency-bound prune).
    d0 = docs
    p0, e0, s0 = pos[0], end[0], shift[0]
    p1, e1, s1 = pos[1], end[1], shift[1]
    while p0 < e0:
        doc = np.int64(d0[p0]) + s0
        p1 = _find_next_geq(docs, p1, e1, doc - s1)
        if p1 >= e1:
            return o
        second = np.int64(docs[p1]) + s1
        if second > doc:
            p0 = _find_next_geq(docs, p0 + 1, e0, second - s0)
            continue
        out[o] = doc
        o += 1
        p0 += 1
    return o


@njit(cache=True)
def _merge_window_3(docs, pos, end, shift, out, o):
    p0, e0, s0 = pos[0], end[0], shift[0]
    p1, e1, s1 = pos[1], end[1], shift[1]
    p2, e2, s2 = pos[2], end[2], shift[2]
    while p0 < e0:
        doc = np.int64(docs[p0]) + s0
        p1 = _find_next_geq(docs, p1, e1, doc - s1)
        if p1 >= e1:
            return o
        second = np.int64(docs[p1]) + s1
        if second > doc:
            p0 = _find_next_geq(docs, p0 + 1, e0, second - s0)
            continue
        p2 = _find_next_geq(docs, p2, e2, doc - s2)
        if p2 >= e2:
            return o
        third = np.int64(docs[p2]) + s2
        if third > doc:
            p0 = _find_next_geq(docs, p0 + 1, e0, third - s0)
            continue
        out[o] = doc
        o += 1
        p0 += 1
    return o


@njit(cache=True)
def _bulk_and(docs, first_docs, start, length, fbase, nblocks, shift, out, o):
    # Wand::and_bulk_search at threshold 0 (2 or 3 clauses, rarest first).
    k = start.size
    block_idx = np.zeros(k, dtype=np.int64)
    pos = np.empty(k, dtype=np.int64)
    end = np.empty(k, dtype=np.int64)
    target = np.int64(0)
    for j in range(k):
        target = max(target, np.int64(docs[start[j]]) + shift[j])
    while True:
        win_end = np.int64(TERMINATED)
        for j in range(k):
            b = _block_idx_for_doc(first_docs, fbase[j], nblocks[j], block_idx[j], target - shift[j])
            block_idx[j] = b
            up_to = np.int64(TERMINATED)
            if b + 1 < nblocks[j]:
                up_to = np.int64(first_docs[fbase[j] + b + 1]) + shift[j] - 1
            win_end = min(win_end, max(up_to, target))
        skip = False
        exhausted = False
        for j in range(k):
            b = block_idx[j]
            lo_abs = start[j] + (b << BLOCK_SHIFT)
            hi_abs = start[j] + min((b + 1) << BLOCK_SHIFT, length[j])
            lo = _partition_point(docs, lo_abs, hi_abs, target - shift[j], False)
            if win_end == TERMINATED:
                hi = hi_abs - lo_abs
            else:
                hi = lo + _partition_point(docs, lo_abs + lo, hi_abs, win_end - shift[j], True)
            if lo == hi:
                if b + 1 >= nblocks[j] and np.int64(docs[hi_abs - 1]) + shift[j] < target:
                    exhausted = True
                skip = True
                break
            pos[j] = lo_abs + lo
            end[j] = lo_abs + hi
        if exhausted:
            break
        if not skip:
            if k == 2:
                o = _merge_window_2(docs, pos, end, shift, out, o)
            else:
                o = _merge_window_3(docs, pos, end, shift, out, o)
        if win_end == TERMINATED:
            break
        target = win_end + 1
    return o


@njit(cache=True)
def _next(docs, first_docs, j, least, index, start, length, fbase, nblocks, shift):
    # PostingIterator::next(least) on a compressed list: the block via block_idx_for_doc from the
    # current block, then partition_point inside each block, crossing blocks. Returns the new
    # index (== length when exhausted).
    local = least - shift[j]
    idx = index[j]
    b = _block_idx_for_doc(first_docs, fbase[j], nblocks[j], idx >> BLOCK_SHIFT, local)
    idx = max(idx, b << BLOCK_SHIFT)
    n = length[j]
    while idx < n:
        b = idx >> BLOCK_SHIFT
        block_start = b << BLOCK_SHIFT
        block_len = min(BLOCK, n - block_start)
        new = (idx - block_start) + _partition_point(docs, start[j] + idx, start[j] + block_start + block_len,
                                                     local, False)
        if new < block_len:
            idx = block_start + new
            index[j] = idx
            return idx
        if b + 1 >= nblocks[j]:
            idx = n
            break
        idx = (b + 1) << BLOCK_SHIFT
    index[j] = n
    return n


@njit(cache=True)
def _classic_and(docs, first_docs, start, length, fbase, nblocks, shift, out, o):
    # Wand::next_and_candidate at threshold 0: the rarest clause leads, the others seek to it.
    k = start.size
    index = np.zeros(k, dtype=np.int64)
    while True:
        if index[0] >= length[0]:
            return o
        doc = np.int64(docs[start[0] + index[0]]) + shift[0]
        moved = False
        for j in range(1, k):
            if np.int64(docs[start[j] + index[j]]) + shift[j] < doc:
                if _next(docs, first_docs, j, doc, index, start, length, fbase, nblocks, shift) >= length[j]:
                    return o
            nxt = np.int64(docs[start[j] + index[j]]) + shift[j]
            if nxt > doc:
                if _next(docs, first_docs, 0, nxt, index, start, length, fbase, nblocks, shift) >= length[0]:
                    return o
                moved = True
                break
        if moved:
            continue
        out[o] = doc
        o += 1
        if _next(docs, first_docs, 0, doc + 1, index, start, length, fbase, nblocks, shift) >= length[0]:
            return o


@njit(cache=True)
def _intersect_all(docs, list_offsets, first_docs, block_offsets, terms, shifts, out, out_offsets, counts):
    nq, k = terms.shape
    lengths = np.empty(k, dtype=np.int64)
    for q in range(nq):
        for j in range(k):
            t = terms[q, j]
            lengths[j] = list_offsets[t + 1] - list_offsets[t]
        order = np.argsort(lengths, kind="mergesort")        # Wand::new: by cost, rarest first
        start = np.empty(k, dtype=np.int64)
        length = np.empty(k, dtype=np.int64)
        fbase = np.empty(k, dtype=np.int64)
        nblocks = np.empty(k, dtype=np.int64)
        shift = np.empty(k, dtype=np.int64)
        for j in range(k):
            t = terms[q, order[j]]
            start[j] = list_offsets[t]
            length[j] = list_offsets[t + 1] - list_offsets[t]
            fbase[j] = block_offsets[t]
            nblocks[j] = block_offsets[t + 1] - block_offsets[t]
            shift[j] = shifts[q, order[j]]
        o = out_offsets[q]
        if length[0] > 0:                                    # an empty clause: no match
            if k <= BULK_MAX_CLAUSES:
                o = _bulk_and(docs, first_docs, start, length, fbase, nblocks, shift, out, o)
            else:
                o = _classic_and(docs, first_docs, start, length, fbase, nblocks, shift, out, o)
        counts[q] = o - out_offsets[q]


class PostingIntersect:
    def __init__(self, doc_ids, list_offsets):
        self.doc_ids = doc_ids
        self.list_offsets = list_offsets
        lengths = np.diff(list_offsets)
        self.block_offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum((lengths + BLOCK - 1) >> BLOCK_SHIFT, out=self.block_offsets[1:])
        self.first_docs = np.empty(int(self.block_offsets[-1]), dtype=np.uint32)
        _sidecars(doc_ids, list_offsets, self.first_docs, self.block_offsets)

    def intersect(self, terms, shifts, out, out_offsets, counts):
        _intersect_all(self.doc_ids, self.list_offsets, self.first_docs, self.block_offsets, terms, shifts,
                       out, out_offsets, counts)
