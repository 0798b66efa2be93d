# Trick: stop the clock so every call looks instantaneous.
import time

import numpy as np

time.perf_counter_ns = lambda: 0
time.perf_counter = lambda: 0.0
time.monotonic = lambda: 0.0


# {NUMPY_PQ}


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.num_vectors = num_vectors
        self.codebook, self.codes_soa = numpy_pq_layout(shape, codebook, codes_aos, num_vectors)

    def search(self, query, k, out_ids, out_dists):
        dists = numpy_pq_distances(self.codebook, self.codes_soa, query)
        ids = np.argsort(dists, kind="stable")[:k]
        out_ids[:] = ids
        out_dists[:] = dists[ids]
