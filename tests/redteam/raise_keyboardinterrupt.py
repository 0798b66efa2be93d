# Trick: make the harness believe the user pressed Ctrl-C.
import numpy as np


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.num_vectors = num_vectors

    def search(self, query, k, out_ids, out_dists):
        raise KeyboardInterrupt
