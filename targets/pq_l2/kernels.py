"""pq-l2 kernels: the one file the autoresearch loop may edit.

A compiled, faithful port of Lance's per-partition PQ L2 search (lancedb/lance d2039d75,
1.0.0-beta.1), float32, one thread, no fastmath:
  - rust/lance-index/src/vector/pq/distance.rs  build_distance_table_l2: m outer, centroid inner,
    each entry lance-linalg/src/distance/l2.rs l2_scalar::<f32, f32, 16> (the sub_dim % 16 tail
    summed first, 16 lane accumulators over the full chunks, lanes folded 0..15, tail + lanes)
  - rust/lance-index/src/vector/pq/distance.rs  compute_pq_distance: codes transposed to SoA
    [M][N] (pq/storage.rs transpose, at index load), m outer, n inner, dist[n] += table[m][code]
  - rust/lance-index/src/vector/flat/index.rs  FlatIndex::search: a std BinaryHeap max-heap of k
    (distance, row id) ordered by distance only; a row replaces the top only if the top is
    strictly greater (pop, then push); then the scanner's SortExec orders by (distance, row id)
No tuning beyond upstream's loops: this is the bar a keep must beat.
"""

import numpy as np
from numba import njit

LANES = 16


@njit(cache=True)
def _l2_short(q, x, sub_dim):
    # l2_scalar::<f32, f32, 16> up to 16 dims (no full chunk, or one): a left-to-right sum.
    total = np.float32(0.0)
    for d in range(sub_dim):
        diff = q[d] - x[d]
        total += diff * diff
    return total


@njit(cache=True)
def _l2_lanes(q, x, sub_dim):
    # l2_scalar::<f32, f32, 16>: the sub_dim % 16 tail first, 16 lane sums over the full chunks,
    # lanes folded 0..15, then tail + lanes.
    full = sub_dim - sub_dim % LANES
    tail = np.float32(0.0)
    for d in range(full, sub_dim):
        diff = q[d] - x[d]
        tail += diff * diff
    lanes = np.zeros(LANES, dtype=np.float32)
    for start in range(0, full, LANES):
        for lane in range(LANES):
            diff = q[start + lane] - x[start + lane]
            lanes[lane] += diff * diff
    total = np.float32(0.0)
    for lane in range(LANES):
        total += lanes[lane]
    return tail + total


@njit(cache=True)
def _distance_table(codebook, query, num_sub_vectors, sub_dim, table):
    # Two loops, not a branch per entry: numba compiles the short sum far better on its own.
    for m in range(num_sub_vectors):
        q = query[m * sub_dim:(m + 1) * sub_dim]
        if sub_dim <= LANES:
            for c in range(256):
                x = codebook[(m * 256 + c) * sub_dim:(m * 256 + c + 1) * sub_dim]
                table[m * 256 + c] = _l2_short(q, x, sub_dim)
        else:
            for c in range(256):
                x = codebook[(m * 256 + c) * sub_dim:(m * 256 + c + 1) * sub_dim]
                table[m * 256 + c] = _l2_lanes(q, x, sub_dim)


@njit(cache=True)
def _pq_distances(table, codes_soa, num_sub_vectors, num_vectors, dists):
    dists[:] = 0.0
    for m in range(num_sub_vectors):
        row = table[m * 256:(m + 1) * 256]
        codes = codes_soa[m * num_vectors:(m + 1) * num_vectors]
        for n in range(num_vectors):
            dists[n] += row[codes[n]]


@njit(cache=True)
def _sift_up(heap_d, heap_i, start, pos):
    # std BinaryHeap::sift_up: move the hole up while the element is greater than its parent.
    d, i = heap_d[pos], heap_i[pos]
    while pos > start:
        parent = (pos - 1) // 2
        if d <= heap_d[parent]:
            break
        heap_d[pos], heap_i[pos] = heap_d[parent], heap_i[parent]
        pos = parent
    heap_d[pos], heap_i[pos] = d, i


@njit(cache=True)
def _pop(heap_d, heap_i, size):
    # std BinaryHeap::pop: the last element to the root, sift_down_to_bottom(0), then sift_up.
    end = size - 1
    top_d, top_i = heap_d[0], heap_i[0]
    if end == 0:
        return top_d, top_i
    d, i = heap_d[end], heap_i[end]
    pos = 0
    child = 1
    while child <= end - 2:
        if heap_d[child] <= heap_d[child + 1]:
            child += 1
        heap_d[pos], heap_i[pos] = heap_d[child], heap_i[child]
        pos = child
        child = 2 * pos + 1
    if child == end - 1:
        heap_d[pos], heap_i[pos] = heap_d[child], heap_i[child]
        pos = child
    heap_d[pos], heap_i[pos] = d, i
    _sift_up(heap_d, heap_i, 0, pos)
    return top_d, top_i


@njit(cache=True)
def _top_k(dists, k, out_ids, out_dists):
    heap_d = np.empty(k, dtype=np.float32)
    heap_i = np.empty(k, dtype=np.int64)
    size = 0
    for n in range(dists.size):
        d = dists[n]
        if size < k:
            heap_d[size], heap_i[size] = d, n
            _sift_up(heap_d, heap_i, 0, size)
            size += 1
        elif heap_d[0] > d:
            _pop(heap_d, heap_i, size)
            heap_d[size - 1], heap_i[size - 1] = d, n
            _sift_up(heap_d, heap_i, 0, size - 1)
    # SortExec(_distance ASC, _rowid ASC): pop worst-first into place, then order ties by row id.
    for last in range(size - 1, -1, -1):
        out_dists[last], out_ids[last] = _pop(heap_d, heap_i, last + 1)
    for j in range(1, size):
        d, i = out_dists[j], out_ids[j]
        pos = j
        while pos > 0 and out_dists[pos - 1] == d and out_ids[pos - 1] > i:
            out_ids[pos] = out_ids[pos - 1]
            pos -= 1
        out_ids[pos] = i


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.num_vectors = num_vectors
        self.num_sub_vectors = shape.num_sub_vectors
        self.sub_dim = shape.sub_dim
        self.codebook = codebook
        # storage.rs transpose: AoS [N][M] -> SoA [M][N], once, at index load (untimed).
        self.codes_soa = np.ascontiguousarray(codes_aos.reshape(num_vectors, shape.num_sub_vectors).T).reshape(-1)
        self.table = np.empty(shape.num_sub_vectors * 256, dtype=np.float32)
        self.dists = np.empty(num_vectors, dtype=np.float32)

    def search(self, query, k, out_ids, out_dists):
        _distance_table(self.codebook, query, self.num_sub_vectors, self.sub_dim, self.table)
        _pq_distances(self.table, self.codes_soa, self.num_sub_vectors, self.num_vectors, self.dists)
        _top_k(self.dists, k, out_ids, out_dists)
