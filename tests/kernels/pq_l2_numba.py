"""A numba pq-l2 kernel used by tests and benchmarks: per-vector loop over AoS codes, exact
Lance summation order (sequential over sub_dim, m ascending)."""
import numpy as np
from numba import njit


@njit
def _table(cb, q, m_count, sd, out):
    for m in range(m_count):
        for k in range(256):
            base = (m * 256 + k) * sd
            s = np.float32(0.0)
            for d in range(sd):
                diff = cb[base + d] - q[m * sd + d]
                s += diff * diff
            out[m * 256 + k] = s


@njit
def _dists(codes, table, n, m_count, out):
    for i in range(n):
        acc = np.float32(0.0)
        for m in range(m_count):
            acc += table[m * 256 + codes[i * m_count + m]]
        out[i] = acc


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.shape, self.num_vectors = shape, num_vectors
        self.codebook, self.codes = codebook, codes_aos

    def distance_table(self, query, out):
        _table(self.codebook, query, self.shape.num_sub_vectors, self.shape.sub_dim, out)

    def compute_distances(self, table, out):
        _dists(self.codes, table, self.num_vectors, self.shape.num_sub_vectors, out)
