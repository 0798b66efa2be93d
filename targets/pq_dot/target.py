"""pq-dot's contract and op: the shared PQ search, unchanged (the workers run ``targets.harness.pq``).

The kernel API (``PqKernel.search``: table, distances and top-k, all the kernel's) and the
caller-filled output buffers are the same; what differs is the arithmetic the kernel must
reproduce (table ``1 − q_m·c``, distances summed then ``− (M − 1)``) and the oracle's tolerance.
Smallest first is right for both: Lance's dot distance is ``1 − q·x``.
"""

from targets.harness.pq import ALLOWED_IMPORTS, KERNEL_API, NUM_CENTROIDS, OPS, TOP_K, PqShape, build

__all__ = ["ALLOWED_IMPORTS", "KERNEL_API", "NUM_CENTROIDS", "OPS", "TOP_K", "PqShape", "build"]
