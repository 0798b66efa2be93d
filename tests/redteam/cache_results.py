# Trick: compute once per instance, then return the cached answer for every later query.
import numpy as np


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.shape, self.num_vectors = shape, num_vectors
        m = shape.num_sub_vectors
        self.codebook = codebook.reshape(m, 256, shape.sub_dim)
        self.codes_soa = np.ascontiguousarray(codes_aos.reshape(num_vectors, m).T)
        self.table = self.dists = None

    def distance_table(self, query, out):
        if self.table is None:
            m, sd = self.shape.num_sub_vectors, self.shape.sub_dim
            t = np.empty((m, 256), dtype=np.float32)
            for i in range(m):
                diff = self.codebook[i] - query[i * sd:(i + 1) * sd]
                t[i] = (diff * diff).sum(axis=1)
            self.table = t.reshape(-1)
        out[:] = self.table

    def compute_distances(self, table, out):
        if self.dists is None:
            d = np.zeros(self.num_vectors, dtype=np.float32)
            for i in range(self.shape.num_sub_vectors):
                d += table[i * 256:(i + 1) * 256][self.codes_soa[i]]
            self.dists = d
        out[:] = self.dists
