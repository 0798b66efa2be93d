"""pq-cosine's contract: pq-l2's, unchanged (the workers run the shared ``targets.harness.pq``).

Lance has no cosine PQ kernel: it normalises the data at build time and the query before the
search, then runs the L2 path (see docs/targets/pq-cosine.md). This target is pq-l2 on unit-norm
embedding data; only its inputs differ.
"""

from targets.harness.pq import ALLOWED_IMPORTS, KERNEL_API, NUM_CENTROIDS, OPS, TOP_K, PqShape, build

__all__ = ["ALLOWED_IMPORTS", "KERNEL_API", "NUM_CENTROIDS", "OPS", "TOP_K", "PqShape", "build"]
