"""The pq-l2 oracle checked against Lance itself (pylance, through targets/harness/lance.py): on
every battery case, Lance's codes equal the fixture's, every `_distance` Lance returns (k = N) is within the target's tolerance of
the oracle's, and Lance's top-10 is tie-consistent with the oracle's.

Lance is given the fixture's own codebook and a zero IVF centroid (one partition): with any other
centroid it would encode residuals and answer a different question (docs: ../shared/lance-anchor.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from targets.harness import lance, lance_arm, pq_fixtures
from targets.harness.checks import ABS_TOL, PQ_RTOL, check_array, check_topk
from targets.harness.prng import CORRECTNESS_SEED, mix_seeds
from targets.pq_l2 import inputs, reference
from targets.pq_l2.target import TOP_K, PqShape


@pytest.mark.slow
@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
def test_the_oracle_agrees_with_lance_on_the_battery(shape: PqShape, tmp_path: Path) -> None:
    fixtures = inputs.fixtures()
    n = inputs.CORRECTNESS_NUM_VECTORS
    for kind in inputs.CORRECTNESS_KINDS:
        key = f"battery/{shape.label}/{kind}"
        codebook, codes = fixtures[f"{key}/codebook"], fixtures[f"{key}/codes_aos"]
        base = mix_seeds(CORRECTNESS_SEED, shape.label, kind)
        vectors = inputs.generate(kind, mix_seeds(base, "data"), n, shape.dim)     # the rows the codes encode
        # ... but for the few rows the battery re-codes to the near-centroid query's centroids:
        # those hold their centroids (decoded), which encode back to exactly those codes.
        m = shape.num_sub_vectors
        planted = np.flatnonzero((pq_fixtures.encode(shape, codebook, vectors) != codes).reshape(n, m).any(axis=1))
        assert 0 < planted.size <= inputs.PLANTED_ROWS, (kind, planted)
        vectors[planted] = lance_arm.decoded_vectors(codebook, codes, n, m)[planted]
        ds = lance.pq_dataset(tmp_path / f"{kind}.lance", vectors, codebook, shape.num_sub_vectors)
        assert np.array_equal(lance.stored_pq_codes(ds, n, shape.num_sub_vectors),
                              codes.reshape(n, shape.num_sub_vectors)), kind
        for name in ("query_0", "query_1"):
            query = fixtures[f"{key}/{name}"]
            oracle = reference.distances(shape, reference.distance_table(shape, codebook, query), codes, n)
            ids, dists = lance.search(ds, query, n)
            assert sorted(ids) == list(range(n)), (kind, name)
            by_row = np.empty(n, np.float32)
            by_row[ids] = dists
            problem = check_array(f"lance {kind} {name} distances", by_row, oracle, atol=ABS_TOL, rtol=PQ_RTOL)
            assert problem is None, problem
            top_ids, top_dists = lance.search(ds, query, TOP_K)
            problem = check_topk(top_ids, top_dists, oracle, TOP_K, atol=ABS_TOL, rtol=PQ_RTOL)
            assert problem is None, f"{kind} {name}: {problem}"
            # Answered from the PQ index alone: the plan has the sub-index search and no re-ranking
            # on raw vectors (timed_search reads Lance's timer and refuses a refine step).
            assert lance.timed_search(ds, query, TOP_K) > 0
