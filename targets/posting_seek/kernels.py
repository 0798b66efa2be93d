"""posting-seek kernels: the one file the autoresearch loop may edit.

A compiled, faithful port of Lance's block-aware seek on a compressed posting list,
`PostingIterator::next(least_id)` in rust/lance-index/src/scalar/inverted/wand.rs, as read at
lance-format/lance (formerly lancedb/lance) main after PRs #7624/#7625 (2026-07; the stored
snapshot of wand.rs that defines `LINEAR_BLOCK_SKIP_LIMIT`, whose commit the code search index
does not expose), one thread, numba:
  - `PostingIterator::block_idx_for_doc(list, index >> shift, least_id)` (no impact skip data):
    from the current entry's block, up to LINEAR_BLOCK_SKIP_LIMIT = 8 linear steps over the block
    first-doc sidecar (`block_least_doc_id(b + 1) > least_id` stops), then a binary search over
    the sidecar of the remaining blocks (`block_idx_for_doc_by_least_doc_id`);
  - `index = max(index, block_idx << shift)`, then per block `partition_point(|d| d < least_id)`
    over the rest of the block (Rust's `binary_search_by` loop); a block with nothing at or past
    the target moves on to the next block's first entry; the last block exhausts the iterator.
At lancedb/lance d2039d75 the same method scanned the sidecar linearly without limit and then
advanced one entry at a time (`while doc(index) < least_id { index += 1 }`); upstream replaced
both. Lance decompresses a block when the cursor first enters it; here the list arrives
decompressed with its sidecar. No tuning beyond upstream's loop: this is the bar a keep must beat.
"""

import numpy as np
from numba import njit

BLOCK_SHIFT = 7                   # 128-doc blocks (builder.rs BLOCK_SIZE)
BLOCK = 1 << BLOCK_SHIFT
LINEAR_BLOCK_SKIP_LIMIT = 8       # wand.rs


@njit(cache=True)
def _partition_point(docs, lo, hi, value):
    # Rust slice::partition_point(|d| d < value): binary_search_by's loop, as a count of the
    # leading elements below value.
    size = hi - lo
    if size == 0:
        return 0
    base = lo
    while size > 1:
        half = size // 2
        mid = base + half
        if np.int64(docs[mid]) < value:
            base = mid
        size -= half
    return base - lo + (1 if np.int64(docs[base]) < value else 0)


@njit(cache=True)
def _block_idx_for_doc(first_docs, block_idx, least):
    nblocks = first_docs.size
    linear = 0
    while block_idx + 1 < nblocks and linear < LINEAR_BLOCK_SKIP_LIMIT:
        if np.int64(first_docs[block_idx + 1]) > least:
            return block_idx
        block_idx += 1
        linear += 1
    if block_idx + 1 >= nblocks:
        return block_idx
    left, right = block_idx + 1, nblocks
    while left < right:
        mid = left + (right - left) // 2
        if np.int64(first_docs[mid]) <= least:
            left = mid + 1
        else:
            right = mid
    return left - 1


@njit(cache=True)
def _next(first_docs, docs, index, least):
    # PostingIterator::next(least) from entry `index`: the new entry index, == docs.size when the
    # list is exhausted.
    n = docs.size
    b = _block_idx_for_doc(first_docs, index >> BLOCK_SHIFT, least)
    index = max(index, b << BLOCK_SHIFT)
    while index < n:
        b = index >> BLOCK_SHIFT
        block_start = b << BLOCK_SHIFT
        block_len = min(BLOCK, n - block_start)
        new = (index - block_start) + _partition_point(docs, index, block_start + block_len, least)
        if new < block_len:
            return block_start + new
        if b + 1 >= first_docs.size:
            return n
        index = (b + 1) << BLOCK_SHIFT
    return n


@njit(cache=True)
def _seek_sequence(first_docs, docs, ops, out):
    n = docs.size
    index = 0            # the cursor: an entry index, n when exhausted
    base = 0             # the doc the last seek returned (0 when fresh)
    for i in range(ops.size):
        op = ops[i]
        if op < 0:                               # reset: a fresh iterator on the first entry
            index, base = 0, 0
            out[i] = -1
            continue
        if index >= n:
            out[i] = -1
            continue
        index = _next(first_docs, docs, index, base + op)
        if index >= n:
            out[i] = -1
        else:
            base = np.int64(docs[index])
            out[i] = base


class PostingSeek:
    def __init__(self, first_doc_ids, doc_ids):
        self.first_doc_ids = first_doc_ids
        self.doc_ids = doc_ids

    def seek_sequence(self, ops, out):
        _seek_sequence(self.first_doc_ids, self.doc_ids, ops, out)
