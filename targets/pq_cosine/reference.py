"""pq-cosine's oracle: Lance's query normalisation, then pq-l2's Lance-order L2 oracle.

Upstream (lance-linalg/src/kernels.rs ``normalize``): ``norm = sqrt(Σ x²)`` as a sequential f32
sum, then ``x / norm`` (a division, not a multiply by the reciprocal). The harness applies it to
data and queries before the kernel sees them, as Lance does outside the PQ path.
"""

from __future__ import annotations

import numpy as np

from targets.pq_l2.reference import distance_table, distances

__all__ = ["distance_table", "distances", "normalize_rows"]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Each row of f32[rows, dim] divided by its norm, the squares summed in dimension order."""
    x = np.asarray(x, dtype=np.float32)
    acc = np.zeros(x.shape[0], dtype=np.float32)
    for d in range(x.shape[1]):
        acc += x[:, d] * x[:, d]
    return (x / np.sqrt(acc)[:, None]).astype(np.float32)
