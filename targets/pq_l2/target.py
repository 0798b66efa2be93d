"""pq-l2's contract and op: the shared PQ search (the workers run ``targets.harness.pq``).

The op is one ``search`` call, the whole of Lance's per-partition PQ search (distance table,
per-vector distances, top-k), all the kernel's. pq-dot and pq-cosine run the same op on other
inputs, so it lives in the harness; pq-l2's arithmetic (squared L2 table entries, distances
summed) is what its oracle and tolerance hold the kernel to.
"""

from targets.harness.pq import ALLOWED_IMPORTS, KERNEL_API, NUM_CENTROIDS, OPS, TOP_K, PqShape, build

__all__ = ["ALLOWED_IMPORTS", "KERNEL_API", "NUM_CENTROIDS", "OPS", "TOP_K", "PqShape", "build"]
