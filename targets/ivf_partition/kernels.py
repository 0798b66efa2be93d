"""ivf-partition kernels: the one file the autoresearch loop may edit.

A compiled, faithful port of Lance's IVF partition selection (lancedb/lance d2039d75,
1.0.0-beta.1), float32, one thread, no fastmath:
  - rust/lance-index/src/vector/kmeans.rs  kmeans_find_partitions: the distance from the query to
    every centroid of the flat [nlist][dim] array, then sort_to_indices(dists, None, Some(n)) and
    a take of the distances at those indices
  - rust/lance-linalg/src/distance/l2.rs  l2_distance_batch -> l2_scalar::<f32, f32, 16>
    (from = the query, to = a centroid: the dim % 16 tail summed first, 16 lane accumulators over
    the full chunks, lanes folded 0..15, tail + lanes)
  - rust/lance-linalg/src/distance/dot.rs  dot_distance_batch -> 1 - dot_scalar::<f32, f32, 16>
    (the same order, products instead of squared differences)
  - rust/lance/src/io/exec/knn.rs  ANNIvfPartitionExec: for cosine the query is normalised first
    (rust/lance-linalg/src/kernels.rs normalize: a sequential f32 sum of x^2, sqrt, a division)
    and L2 is used on it (rust/lance/src/index/vector/ivf/v2.rs find_partitions: Cosine -> L2)
  - arrow-ord 56.2 src/sort.rs  sort_to_indices(dists, None, Some(n)): sort_primitive's (index,
    value) pairs in index order, compared by f32::total_cmp (here: the same i32 key total_cmp
    computes, made once per pair); sort_impl: n == len -> slice::sort_unstable, else partial_sort
    = select_nth_unstable(n - 1), then sort_unstable of the n - 1 before it; then the take.
    Rust std (1.90, library/core/src/slice/sort): select.rs partition_at_index (max/min scans for
    the last/first index, else introselect: insertion sort up to 16, pivot.rs choose_pivot's
    median of 3 / recursive pseudo-median from 64 up, the ancestor-pivot equal-element
    partition, at most 16 rounds) and unstable/mod.rs sort (insertion sort up to 20, ipnsort's
    existing-run check, quicksort with the same pivot choice and a 2 log2(n) round limit).
    Simplified: partitions are a plain Lomuto scan (std's branchless cyclic Lomuto permutes
    differently), small sorts are insertion sorts (std uses sorting networks up to 32), and the
    fallbacks (median of medians in the select, heapsort in the sort) are a heapsort. So
    distinct distances come out exactly as upstream's; ties come out in some order, as upstream's
    unstable sorts leave them.
No tuning beyond upstream's loops: this is the bar a keep must beat.
"""

import numpy as np
from numba import njit

LANES = 16
SELECT_INSERTION = 16       # std select.rs INSERTION_SORT_THRESHOLD
SORT_INSERTION = 20         # std sort_unstable MAX_LEN_ALWAYS_INSERTION_SORT
SMALL_SORT = 32             # std SMALL_SORT_GENERAL_THRESHOLD (quicksort's small-sort cut-off)
PSEUDO_MEDIAN_REC = 64      # std pivot.rs PSEUDO_MEDIAN_REC_THRESHOLD


@njit(cache=True)
def _normalize(query, out):
    total = np.float32(0.0)
    for d in range(query.size):
        total += query[d] * query[d]
    norm = np.float32(np.sqrt(total))
    for d in range(query.size):
        out[d] = query[d] / norm


@njit(cache=True)
def _l2_batch(query, centroids, dists):
    nlist, dim = centroids.shape
    full = dim - dim % LANES
    lanes = np.zeros(LANES, dtype=np.float32)
    for i in range(nlist):
        tail = np.float32(0.0)
        for d in range(full, dim):
            diff = query[d] - centroids[i, d]
            tail += diff * diff
        lanes[:] = 0.0
        for start in range(0, full, LANES):
            for lane in range(LANES):
                diff = query[start + lane] - centroids[i, start + lane]
                lanes[lane] += diff * diff
        total = np.float32(0.0)
        for lane in range(LANES):
            total += lanes[lane]
        dists[i] = tail + total


@njit(cache=True)
def _dot_batch(query, centroids, dists):
    nlist, dim = centroids.shape
    full = dim - dim % LANES
    lanes = np.zeros(LANES, dtype=np.float32)
    for i in range(nlist):
        tail = np.float32(0.0)
        for d in range(full, dim):
            tail += centroids[i, d] * query[d]
        lanes[:] = 0.0
        for start in range(0, full, LANES):
            for lane in range(LANES):
                lanes[lane] += centroids[i, start + lane] * query[start + lane]
        total = np.float32(0.0)
        for lane in range(LANES):
            total += lanes[lane]
        dists[i] = np.float32(1.0) - (tail + total)


# --- sort_to_indices: pairs (key, index), key = f32::total_cmp's i32 ---------------------------

@njit(cache=True)
def _swap(keys, idx, a, b):
    keys[a], keys[b] = keys[b], keys[a]
    idx[a], idx[b] = idx[b], idx[a]


@njit(cache=True)
def _insertion_sort(keys, idx, lo, hi):
    # smallsort.rs insertion_sort_shift_left(v, 1): shift each element left past greater ones.
    for i in range(lo + 1, hi):
        k, j = keys[i], idx[i]
        pos = i
        while pos > lo and k < keys[pos - 1]:
            keys[pos], idx[pos] = keys[pos - 1], idx[pos - 1]
            pos -= 1
        keys[pos], idx[pos] = k, j


@njit(cache=True)
def _median3(keys, a, b, c):
    x = keys[a] < keys[b]
    y = keys[a] < keys[c]
    if x == y:
        z = keys[b] < keys[c]
        return c if z ^ x else b
    return a


@njit(cache=True)
def _median3_rec(keys, a, b, c, n):
    # pivot.rs median3_rec: if n * 8 >= 64, each of a, b, c is first replaced by
    # median3_rec(x, x + 4 (n/8), x + 7 (n/8), n/8); then median3(a, b, c). The ternary recursion
    # (depth log8 n) runs on an explicit stack of frames (numba's cache and recursion do not mix).
    depth = 24
    fa = np.empty(depth, dtype=np.int64)
    fb = np.empty(depth, dtype=np.int64)
    fc = np.empty(depth, dtype=np.int64)
    fn = np.empty(depth, dtype=np.int64)
    stage = np.zeros(depth, dtype=np.int64)
    res = np.empty((depth, 3), dtype=np.int64)
    top = 0
    fa[0], fb[0], fc[0], fn[0] = a, b, c, n
    while True:
        m = fn[top]
        s = stage[top]
        if m * 8 >= PSEUDO_MEDIAN_REC and s < 3:
            x = fa[top] if s == 0 else (fb[top] if s == 1 else fc[top])
            m8 = m // 8
            stage[top] = s + 1
            top += 1
            fa[top], fb[top], fc[top], fn[top], stage[top] = x, x + m8 * 4, x + m8 * 7, m8, 0
            continue
        if m * 8 >= PSEUDO_MEDIAN_REC:
            r = _median3(keys, res[top, 0], res[top, 1], res[top, 2])
        else:
            r = _median3(keys, fa[top], fb[top], fc[top])
        if top == 0:
            return r
        top -= 1
        res[top, stage[top] - 1] = r


@njit(cache=True)
def _choose_pivot(keys, lo, hi):
    n8 = (hi - lo) // 8
    a, b, c = lo, lo + n8 * 4, lo + n8 * 7
    if hi - lo < PSEUDO_MEDIAN_REC:
        return _median3(keys, a, b, c)
    return _median3_rec(keys, a, b, c, n8)


@njit(cache=True)
def _partition(keys, idx, lo, hi, pivot_pos, or_equal):
    # quicksort.rs partition: the pivot to the front, elements < pivot (or <= it, for the
    # ancestor-pivot case) before the rest, the pivot between; returns how many precede it.
    _swap(keys, idx, lo, pivot_pos)
    p = keys[lo]
    num_lt = 0
    for r in range(lo + 1, hi):
        if keys[r] < p or (or_equal and keys[r] == p):
            _swap(keys, idx, lo + 1 + num_lt, r)
            num_lt += 1
    _swap(keys, idx, lo, lo + num_lt)
    return num_lt


@njit(cache=True)
def _sift_down(keys, idx, lo, node, end):
    while True:
        child = 2 * node + 1
        if child >= end:
            return
        if child + 1 < end and keys[lo + child] < keys[lo + child + 1]:
            child += 1
        if not keys[lo + node] < keys[lo + child]:
            return
        _swap(keys, idx, lo + node, lo + child)
        node = child


@njit(cache=True)
def _heapsort(keys, idx, lo, hi):
    n = hi - lo
    for node in range(n // 2 - 1, -1, -1):
        _sift_down(keys, idx, lo, node, n)
    for end in range(n - 1, 0, -1):
        _swap(keys, idx, lo, lo + end)
        _sift_down(keys, idx, lo, 0, end)


@njit(cache=True)
def _select_nth(keys, idx, index):
    # select.rs partition_at_index.
    n = keys.size
    if index == n - 1:
        best = 0
        for i in range(1, n):
            if keys[best] < keys[i]:
                best = i
        _swap(keys, idx, best, index)
        return
    if index == 0:
        best = 0
        for i in range(1, n):
            if keys[i] < keys[best]:
                best = i
        _swap(keys, idx, best, index)
        return
    lo, hi = 0, n
    has_ancestor = False
    ancestor = keys[0]
    limit = 16
    while True:
        if hi - lo <= SELECT_INSERTION:
            _insertion_sort(keys, idx, lo, hi)
            return
        if limit == 0:
            _heapsort(keys, idx, lo, hi)
            return
        limit -= 1
        pivot_pos = _choose_pivot(keys, lo, hi)
        if has_ancestor and not ancestor < keys[pivot_pos]:
            mid = lo + _partition(keys, idx, lo, hi, pivot_pos, True) + 1
            if mid > index:
                return
            lo = mid
            has_ancestor = False
            continue
        mid = lo + _partition(keys, idx, lo, hi, pivot_pos, False)
        if mid < index:
            ancestor = keys[mid]
            has_ancestor = True
            lo = mid + 1
        elif mid > index:
            hi = mid
        else:
            return


@njit(cache=True)
def _sort(keys, idx, lo, hi):
    # unstable/mod.rs sort + ipnsort + quicksort.rs quicksort (an explicit stack for the left side).
    n = hi - lo
    if n < 2:
        return
    if n <= SORT_INSERTION:
        _insertion_sort(keys, idx, lo, hi)
        return
    # find_existing_run: already ascending (non-descending) or strictly descending -> done.
    run = 1
    if keys[lo + 1] < keys[lo]:
        while run < n and keys[lo + run] < keys[lo + run - 1]:
            run += 1
        if run == n:
            i, j = lo, hi - 1
            while i < j:
                _swap(keys, idx, i, j)
                i += 1
                j -= 1
            return
    else:
        while run < n and not keys[lo + run] < keys[lo + run - 1]:
            run += 1
        if run == n:
            return
    limit = 2 * int(np.log2(n | 1))
    stack_lo = np.empty(128, dtype=np.int64)
    stack_hi = np.empty(128, dtype=np.int64)
    stack_anc = np.empty(128, dtype=np.int64)      # index of the ancestor pivot, or -1
    stack_lim = np.empty(128, dtype=np.int64)
    top = 0
    stack_lo[0], stack_hi[0], stack_anc[0], stack_lim[0] = lo, hi, -1, limit
    top = 1
    while top > 0:
        top -= 1
        a, b, anc, lim = stack_lo[top], stack_hi[top], stack_anc[top], stack_lim[top]
        while True:
            if b - a <= SMALL_SORT:
                _insertion_sort(keys, idx, a, b)
                break
            if lim == 0:
                _heapsort(keys, idx, a, b)
                break
            lim -= 1
            pivot_pos = _choose_pivot(keys, a, b)
            if anc >= 0 and not keys[anc] < keys[pivot_pos]:
                a = a + _partition(keys, idx, a, b, pivot_pos, True) + 1
                anc = -1
                continue
            mid = a + _partition(keys, idx, a, b, pivot_pos, False)
            # the left side first (pushed last), the right side with this pivot as its ancestor
            stack_lo[top], stack_hi[top], stack_anc[top], stack_lim[top] = mid + 1, b, mid, lim
            top += 1
            b = mid


@njit(cache=True)
def _sort_to_indices(dists, n, keys, idx, out_ids, out_dists):
    nlist = dists.size
    bits = dists.view(np.int32)
    for i in range(nlist):
        keys[i] = bits[i] ^ ((bits[i] >> 31) & 0x7FFFFFFF)     # f32::total_cmp's key
        idx[i] = i
    if n == nlist:
        _sort(keys, idx, 0, nlist)
    else:
        _select_nth(keys, idx, n - 1)
        _sort(keys, idx, 0, n - 1)
    for j in range(n):
        out_ids[j] = idx[j]
        out_dists[j] = dists[idx[j]]


class IvfKernel:
    def __init__(self, centroids, distance_type):
        self.centroids = centroids
        self.distance_type = distance_type
        nlist, dim = centroids.shape
        self.unit = np.empty(dim, dtype=np.float32)
        self.dists = np.empty(nlist, dtype=np.float32)
        self.keys = np.empty(nlist, dtype=np.int32)
        self.idx = np.empty(nlist, dtype=np.uint32)

    def find_partitions(self, query, nprobes):
        nlist = self.dists.size
        n = nlist if nprobes is None else min(nprobes, nlist)
        if self.distance_type == "dot":
            _dot_batch(query, self.centroids, self.dists)
        else:
            if self.distance_type == "cosine":
                _normalize(query, self.unit)
                query = self.unit
            _l2_batch(query, self.centroids, self.dists)
        ids = np.empty(n, dtype=np.uint32)
        dists = np.empty(n, dtype=np.float32)
        _sort_to_indices(self.dists, n, self.keys, self.idx, ids, dists)
        return ids, dists
