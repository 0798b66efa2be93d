"""take trial entry point: ``python -m targets.take.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from targets.harness import runner
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload
from targets.harness.prng import Stream, mix_seeds
from targets.take import inputs, reference
from targets.take.target import CHECK_FILLS, OUTPUTS, SPEED_FILL, allocate, declared, digest, output_shapes

KERNEL = Path(__file__).with_name("kernels.py")
PROFILE_DISTRIBUTION = "random_dup"
# A 10^5-address call costs 5-40 ms in the baseline and ~60 ms on the runner's side (the request,
# its output sizes and, for a quarter of the calls, the oracle): 4 worker pairs x 2 blocks x 3
# timed calls per combo keep a paired trial near 30 s (the default 8 x 2 x 8 took ~170 s).
QUERIES, REPLICATES = 3, 4


def call(addrs: np.ndarray, ds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One request with the output sizes the op allocates (computed before the kernel runs)."""
    addrs = np.ascontiguousarray(addrs, dtype=np.uint64)
    return {"row_addrs": addrs, "sizes": reference.sizes(addrs, ds)}


def cases(seed: int) -> list[Case]:
    """The fixed battery (every edge case by name) plus fresh requests from the trial seed."""
    ds = inputs.battery_dataset()
    out = [Case(c.name, {}, ds, [call(a, ds) for a in c.calls]) for c in inputs.battery()]
    return out + [Case("fresh", {}, ds, [call(a, ds) for a in inputs.fresh_requests(ds, seed)])]


def _describe(name: str, got: np.ndarray, want: np.ndarray, fill: int) -> str:
    flat_got, flat_want = got.reshape(got.shape[0], -1), want.reshape(want.shape[0], -1)
    bad = np.flatnonzero(np.any(flat_got.view(np.uint8).reshape(got.shape[0], -1)
                                != flat_want.view(np.uint8).reshape(want.shape[0], -1), axis=1))
    i = int(bad[0])
    poison = bool(np.all(flat_got[i:i + 1].view(np.uint8) == fill))
    return (f"{name}: element {i} of {want.shape[0]}: got {flat_got[i][:4].tolist()}, expected {flat_want[i][:4].tolist()}"
            f"{' (the fill: never written)' if poison else ''} ({len(bad)} differ)")


def judge(out: dict[str, np.ndarray], want: dict[str, np.ndarray], dim: int, sizes: np.ndarray) -> str | None:
    """Both runs of the battery op, bit for bit: every output and the guard past it."""
    shapes = output_shapes(sizes, dim)
    for tag, fill in zip("ab", CHECK_FILLS):
        expected = allocate(shapes, fill)
        for name, view in declared(expected, shapes).items():
            view[...] = want[name]
        for name in OUTPUTS:
            got = out.get(f"{name}_{tag}")
            if type(got) is not np.ndarray or got.dtype != np.uint8 or got.shape != expected[name].shape:
                return f"{name}: expected the uint8 buffer of {expected[name].size} bytes, got {got!r:.80}"
            if np.array_equal(got, expected[name]):
                continue
            g = declared({name: got}, {name: shapes[name]})[name]
            w = declared({name: expected[name]}, {name: shapes[name]})[name]
            if g.size and not np.array_equal(g.view(np.uint8), w.view(np.uint8)):
                return f"(run over fill {fill:#04x}) " + _describe(name, g, w, fill)
            nbytes = g.nbytes
            first = int(np.flatnonzero(got[nbytes:] != fill)[0])
            return (f"{name}: wrote past the declared output ({shapes[name][0]} rows, {nbytes} bytes): byte "
                    f"{nbytes + first} is {int(got[nbytes + first]):#04x}, not the fill {fill:#04x}")
    return None


def check(case: Case, call_index: int, out: dict[str, np.ndarray]) -> str | None:
    c = case.calls[call_index]
    want = reference.take(c["row_addrs"], case.arrays)
    return judge(out, want, int(case.arrays["vec"].shape[1]), c["sizes"])


@cache
def speed_dataset() -> dict[str, np.ndarray]:
    return inputs.speed_dataset()


def workload(shape: str, m: int, dist: str, ds: dict[str, np.ndarray]) -> Workload:
    dim = int(ds["vec"].shape[1])

    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        keys = Stream(mix_seeds(seed, "keys", shape, dist, m))
        return [{**call(inputs.request(dist, m, ds, mix_seeds(seed, "speed", shape, dist, m, i)), ds),
                 "key": keys.u64(2)} for i in range(count)]

    def verify(c: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        shapes = output_shapes(c["sizes"], dim)
        buffers = allocate(shapes, SPEED_FILL)
        want_all = reference.take(c["row_addrs"], ds)
        for name, view in declared(buffers, shapes).items():
            view[...] = want_all[name]
        want = digest(buffers, c["key"])

        def check_digest(out: dict[str, np.ndarray]) -> str | None:
            got = out.get("digest")
            if type(got) is not np.ndarray or got.dtype != np.uint64 or got.shape != want.shape:
                return f"digest: expected uint64{list(want.shape)}, got {got!r:.80}"
            bad = [name for name, g, w in zip(OUTPUTS, got, want) if g != w]
            if bad:
                return (f"outputs {bad} (or the guards past them) differ from the oracle's "
                        f"(keyed digests, request of {c['row_addrs'].size} addresses)")
            return None
        return check_digest

    return Workload(shape=shape, distribution=dist, params={}, arrays=ds, queries=queries, verify=verify)


def workloads() -> list[Workload]:
    ds = speed_dataset()
    return [workload(shape, m, dist, ds) for shape, m, dist in inputs.SPEED_COMBOS]


def profile_shapes() -> list[ProfileShape]:
    """The op on random requests (~10 % duplicates) of 25k, 50k and 100k addresses: its time
    splits into a cost per requested row (sort, remap, gather) and a fixed part per call."""
    ds = speed_dataset()
    return [ProfileShape("m100k", PROFILE_DISTRIBUTION, {"rows": (25_000, 50_000, 100_000)}, {"rows": 100_000},
                         lambda size: workload("m100k", size["rows"], PROFILE_DISTRIBUTION, ds))]


PLAN = TargetPlan(name="take", ops_module="targets.take.target", cases=cases, check=check,
                  workloads=workloads, queries_per_combo=QUERIES, replicates=REPLICATES,
                  profile=ProfileSpec({"rows": "per requested row (classify, sort + dedup, remap, gather)"},
                                      "per call (output allocation and poison fill, digest)", profile_shapes))

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
