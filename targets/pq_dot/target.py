"""pq-dot's contract and op: pq-l2's, unchanged (the workers run ``targets.pq_l2.target``).

The kernel API (``PqKernel``: ``distance_table``, ``compute_distances``), the NaN-filled output
buffers and the harness-owned top-K are the same; what differs is the arithmetic the kernel must
reproduce (table ``1 − q_m·c``, distances summed then ``− (M − 1)``) and the oracle's tolerance.
Smallest first is right for both: Lance's dot distance is ``1 − q·x``.
"""

from targets.pq_l2.target import ALLOWED_IMPORTS, KERNEL_API, NUM_CENTROIDS, OPS, TOP_K, PqShape, build, top_k

__all__ = ["ALLOWED_IMPORTS", "KERNEL_API", "NUM_CENTROIDS", "OPS", "TOP_K", "PqShape", "build", "top_k"]
