"""pq-dot kernels: the one file the autoresearch loop may edit.

A faithful numpy port of Lance's PQ dot-product path, float32 throughout:
  - lance-index/src/vector/pq/distance.rs  build_distance_table_dot (-> dot_distance_batch per
    sub-vector, lance-linalg/src/distance/dot.rs: 1 - dot_scalar::<f32, 16>)
  - lance-index/src/vector/pq/distance.rs  compute_pq_distance (codes transposed to SoA by
    lance-index/src/vector/pq/storage.rs transpose, then a gather-add per sub-vector, m ascending)
  - lance-index/src/vector/pq/storage.rs  PQDistCalculator::distance_all, Dot branch: each sum
    minus (M - 1), so the result approximates 1 - q.x
Called per query by PQDistCalculator; top-K is selected outside, by the harness.
"""

import numpy as np


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.shape = shape
        self.num_vectors = num_vectors
        m = shape.num_sub_vectors
        # Codebook layout [M][256][sub_dim], as upstream stores it.
        self.codebook = codebook.reshape(m, shape.num_centroids, shape.sub_dim)
        # storage.rs::transpose: AoS [N][M] -> SoA [M][N], once, outside the per-query path.
        self.codes_soa = np.ascontiguousarray(codes_aos.reshape(num_vectors, m).T)

    def distance_table(self, query, out):
        m_count, sd, k = self.shape.num_sub_vectors, self.shape.sub_dim, self.shape.num_centroids
        table = out.reshape(m_count, k)
        for m in range(m_count):
            dots = (self.codebook[m] * query[m * sd:(m + 1) * sd]).sum(axis=1)
            table[m] = np.float32(1.0) - dots

    def compute_distances(self, table, out):
        m_count, k = self.shape.num_sub_vectors, self.shape.num_centroids
        out[:] = 0.0
        for m in range(m_count):
            out += table[m * k:(m + 1) * k][self.codes_soa[m]]
        out -= np.float32(m_count - 1)
