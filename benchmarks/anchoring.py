"""What every anchor benchmark shares: numeric libraries on one thread (set before numpy is
imported, so import this module first), faiss or a clear exit, the project on ``sys.path``, the
common flags, and the timing of (kernel, reference, faiss) query by query.

The three arms are interleaved per query, in a balanced order (common.arm_order), with the collector off, so
they see the same machine conditions; each query's agreement check runs untimed after it.
"""

from __future__ import annotations

from common import arm_order  # first: one thread and a private numba cache before numpy loads

import argparse
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


try:
    import faiss
except ImportError:
    print("faiss is not installed: run  pip install -e '.[bench]'  (installs faiss-cpu)", file=sys.stderr)
    sys.exit(2)
faiss.omp_set_num_threads(1)

Arm = Callable[[np.ndarray], object]


def faiss_pq_index(dim: int, num_sub_vectors: int, codebook: np.ndarray, codes_aos: np.ndarray, n: int,
                   metric: int) -> faiss.IndexPQ:
    """A faiss IndexPQ holding exactly our codebook (``[M][256][sub_dim]``) and codes (``[N][M]``)."""
    index = faiss.IndexPQ(dim, num_sub_vectors, 8, metric)              # 8 bits: code_size == M
    assert index.pq.ksub == 256 and index.code_size == num_sub_vectors
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32), index.pq.centroids)
    faiss.copy_array_to_vector(np.ascontiguousarray(codes_aos, dtype=np.uint8), index.codes)
    index.ntotal = n
    index.is_trained = True
    return index


def parse_args(doc: str, default_kernel: Path, argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=32, help="fresh queries per workload (default 32)")
    ap.add_argument("--kernel", type=Path, default=default_kernel, help="kernels.py to time (default: shipped)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the fresh queries (default 1)")
    return ap.parse_args(argv)


def time_arms(arms: Sequence[Arm], queries: np.ndarray, agrees: Callable[[np.ndarray], bool]) -> tuple[np.ndarray, int]:
    """Median microseconds per query of each arm, and on how many queries ``agrees`` held."""
    for arm in arms:                          # warm-up (numba JIT, caches), untimed
        arm(queries[0])
    times = np.empty((len(queries), len(arms)))
    agreed = 0
    gc.disable()
    try:
        for i, q in enumerate(queries):
            for j in arm_order(i, len(arms)):
                t0 = time.perf_counter_ns()
                arms[j](q)
                times[i, j] = (time.perf_counter_ns() - t0) / 1e3
            agreed += bool(agrees(q))
    finally:
        gc.enable()
    return np.median(times, axis=0), agreed


class Table:
    """The printed result: one row per workload, then the geomean of the two ratios."""

    def __init__(self, header: str, width: int, agree_label: str) -> None:
        self.width = width
        self.ratios: list[tuple[float, float]] = []
        print(header)
        print(f"{'workload':<{width}}{'kernel us':>11}{'ref us':>11}{'faiss us':>10}{'kern/faiss':>12}"
              f"{'ref/faiss':>11}{agree_label:>13}")

    def row(self, label: str, medians: np.ndarray, agreed: int, queries: int) -> None:
        k_us, r_us, f_us = medians
        self.ratios.append((k_us / f_us, r_us / f_us))
        print(f"{label:<{self.width}}{k_us:>11.1f}{r_us:>11.1f}{f_us:>10.1f}{k_us / f_us:>12.2f}"
              f"{r_us / f_us:>11.2f}{f'{agreed}/{queries}':>13}")

    def geomean(self) -> None:
        geo = np.exp(np.log(np.array(self.ratios)).mean(axis=0))
        print(f"{'geomean':<{self.width + 32}}{geo[0]:>12.2f}{geo[1]:>11.2f}")
