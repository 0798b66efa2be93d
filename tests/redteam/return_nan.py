# Trick: the right ids, but NaN distances (NaN compares false with everything, so a careless
# tolerance check passes it, and the distance work can be skipped).
import numpy as np


# {NUMPY_PQ}


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.num_vectors = num_vectors
        self.codebook, self.codes_soa = numpy_pq_layout(shape, codebook, codes_aos, num_vectors)

    def search(self, query, k, out_ids, out_dists):
        dists = numpy_pq_distances(self.codebook, self.codes_soa, query)
        out_ids[:] = np.argsort(dists, kind="stable")[:k]
        out_dists[:] = np.nan
