"""ivf-partition trial entry point: ``python -m targets.ivf_partition.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from targets.harness import runner
from targets.harness.checks import ABS_TOL, check_ranked
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload
from targets.harness.prng import Stream, mix_seeds
from targets.ivf_partition import inputs, reference
from targets.ivf_partition.inputs import IvfShape
from targets.ivf_partition.target import ALL_PARTITIONS, nprobes_array

KERNEL = Path(__file__).with_name("kernels.py")
# Relative to the summed magnitude of a distance's terms (reference.magnitudes; for L2 the distance
# itself): 1e-5 is 168·2⁻²⁴. On the battery, legal reorderings (numpy's pairwise sum, einsum, BLAS,
# float64, a sequential loop) stay within 15.4·2⁻²⁴ of it; lossy rewrites (the unverified
# |q|²+|c|²−2q·c) miss it by orders of magnitude.
IVF_RTOL = 1e-5


def _params(shape: IvfShape, distance_type: str) -> dict[str, Any]:
    return {"nlist": shape.nlist, "dim": shape.dim, "distance_type": distance_type}


def battery_calls(arrays: dict[str, np.ndarray], nlist: int) -> list[dict[str, np.ndarray]]:
    """Each case's calls: a partial top-n, top-1 of the near-duplicate query, n = nlist, no limit
    (None) and n > nlist."""
    plan = (("query_0", 20), ("query_1", 1), ("query_0", nlist), ("query_1", None), ("query_0", nlist + 7))
    return [{"query": arrays[q], "nprobes": nprobes_array(n)} for q, n in plan]


def _case(name: str, shape: IvfShape, distance_type: str, arrays: dict[str, np.ndarray]) -> Case:
    return Case(name=name, params=_params(shape, distance_type), arrays={"centroids": arrays["centroids"]},
                calls=battery_calls(arrays, shape.nlist))


def cases(seed: int) -> list[Case]:
    """The fixed battery (3 shapes x 6 kinds x 3 distance types) plus one fresh case per shape,
    its kind and distance type drawn from the trial seed."""
    fx = inputs.fixtures()
    out = []
    for shape in inputs.BATTERY_SHAPES:
        for kind in inputs.CORRECTNESS_KINDS:
            for dt in inputs.DISTANCE_TYPES:
                prefix = f"battery/{shape.label}/{kind}/{dt}/"
                out.append(_case(f"{shape.label}/{kind}/{dt}", shape, dt,
                                 {k[len(prefix):]: v for k, v in fx.items() if k.startswith(prefix)}))
    stream = Stream(mix_seeds(seed, "fresh-kinds"))
    kinds = stream.integers(len(inputs.CORRECTNESS_KINDS), len(inputs.BATTERY_SHAPES))
    types = stream.integers(len(inputs.DISTANCE_TYPES), len(inputs.BATTERY_SHAPES))
    for shape, k, t in zip(inputs.BATTERY_SHAPES, kinds, types):
        kind, dt = inputs.CORRECTNESS_KINDS[int(k)], inputs.DISTANCE_TYPES[int(t)]
        out.append(_case(f"{shape.label}/{kind}/{dt}/fresh", shape, dt, inputs.fresh_case(shape, kind, dt, seed)))
    return out


def check_partitions(out: dict[str, np.ndarray], ref: np.ndarray, scale: np.ndarray,
                     nprobes: int | None) -> str | None:
    """The kernel's (ids, dists) against the reference distance of every centroid (``ref``), each
    allowed ``ABS_TOL + IVF_RTOL·scale``. Rules: a 1-d uint32 ids array and a 1-d f32 dists array
    of n = min(nprobes or nlist, nlist); unique in-range ids; every id close enough to make the
    cut and every clear winner present (ties: ids may differ where distances tie within
    tolerance); every distance within tolerance of its id's reference; distances ascending.

    The ranking rules are ``checks.check_ranked`` with a tolerance per centroid: a dot distance's
    rounding error scales with Σ|q_i·c_i|, not with |1 − q·c|.
    """
    ids, dists = out.get("ids"), out.get("dists")
    for name, arr, dtype in (("ids", ids, np.uint32), ("dists", dists, np.float32)):
        if type(arr) is not np.ndarray or arr.ndim != 1:
            return f"{name}: expected a 1-d numpy.ndarray, got {type(arr).__name__}"
        if arr.dtype != dtype:
            return f"{name}: dtype {arr.dtype} (expected {np.dtype(dtype)})"
    assert isinstance(ids, np.ndarray) and isinstance(dists, np.ndarray)
    want = reference.probe_count(ref.size, nprobes)
    return check_ranked(ids, dists, ref, ABS_TOL + IVF_RTOL * scale, want)


def _nprobes(call: dict[str, np.ndarray]) -> int | None:
    n = int(call["nprobes"])
    return None if n == ALL_PARTITIONS else n


def judge(out: dict[str, np.ndarray], query: np.ndarray, nprobes: int | None, centroids: np.ndarray,
          distance_type: str) -> str | None:
    ref = reference.distances(query, centroids, distance_type)
    return check_partitions(out, ref, reference.magnitudes(query, centroids, distance_type, ref), nprobes)


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    request = case.calls[call]
    return judge(out, request["query"], _nprobes(request), case.arrays["centroids"],
                 str(case.params["distance_type"]))


def _verifier(centroids: np.ndarray, distance_type: str
              ) -> Callable[[dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], str | None]]:
    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        ref = reference.distances(call["query"], centroids, distance_type)
        scale = reference.magnitudes(call["query"], centroids, distance_type, ref)
        return lambda out: check_partitions(out, ref, scale, _nprobes(call))
    return verify


def workload(fx: dict[str, np.ndarray], shape: IvfShape, dt: str, nlist: int, nprobes: int | None) -> Workload:
    """One speed combo at ``nlist`` centroids and ``nprobes``: the speed workload itself at the
    shape's own, its first ``nlist`` centroids otherwise (drawn i.i.d. and in order: the same
    distribution, and exactly what ``inputs`` draws at that many from the same seed). Queries are
    the combo's."""
    if not 0 < nlist <= shape.nlist:
        raise ValueError(f"nlist {nlist}: the {shape.label} workload has 1..{shape.nlist} centroids")
    prefix = f"speed/{shape.label}/{dt}/"
    centroids, centres = fx[prefix + "centroids"][:nlist], fx[prefix + "centres"]

    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        # Drawn as the full-size combo's are: a query's distribution does not depend on nlist.
        return [{"query": q, "nprobes": nprobes_array(nprobes)}
                for q in inputs.speed_queries(shape, dt, centres, seed, count)]

    return Workload(shape=shape.label, distribution=inputs.SPEED_DISTRIBUTIONS[dt],
                    params=_params(IvfShape(nlist, shape.dim), dt), arrays={"centroids": centroids},
                    queries=queries, verify=_verifier(centroids, dt))


def workloads() -> list[Workload]:
    fx = inputs.fixtures()
    return [workload(fx, shape, dt, shape.nlist, shape.nprobes)
            for shape in inputs.SPEED_SHAPES for dt in inputs.DISTANCE_TYPES]


def _profile_workload(fx: dict[str, np.ndarray], shape: IvfShape, dt: str, size: dict[str, int]) -> Workload:
    return workload(fx, shape, dt, size["nlist"], size["nprobes"])


def profile_shapes() -> list[ProfileShape]:
    """Per shape, on l2: nlist at a quarter, half and all of its centroids; nprobes at a quarter of
    and at its own (a shape with every partition, None, at 1/16 and 1/4 of nlist: nprobes must stay
    within the smallest nlist). Its shares are taken at nprobes = nlist there, beyond the points."""
    fx, dt = inputs.fixtures(), inputs.DISTANCE_TYPES[0]
    out = []
    for shape in inputs.SPEED_SHAPES:
        probes = shape.nprobes or shape.nlist
        values = (shape.nlist // 16, shape.nlist // 4) if shape.nprobes is None else (max(1, probes // 4), probes)
        out.append(ProfileShape(shape=shape.label, distribution=inputs.SPEED_DISTRIBUTIONS[dt],
                                values={"nlist": (shape.nlist // 4, shape.nlist // 2, shape.nlist), "nprobes": values},
                                at={"nlist": shape.nlist, "nprobes": probes},
                                workload=partial(_profile_workload, fx, shape, dt)))
    return out


PLAN = TargetPlan(name="ivf-partition", ops_module="targets.ivf_partition.target", cases=cases,
                  check=check, workloads=workloads,
                  profile=ProfileSpec(factors={"nlist": "per centroid (distances, selection scan)",
                                               "nprobes": "per probe (sorting the nearest)"},
                                      fixed_label="query prep + per-call fixed", shapes=profile_shapes))


if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
