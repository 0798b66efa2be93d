"""bitpack trial entry point: ``python -m targets.bitpack.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from targets.bitpack import inputs, reference
from targets.bitpack.inputs import SpeedCombo
from targets.bitpack.target import CHUNK, DTYPES, POISON_BYTE, digest, empty_output
from targets.harness import runner
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload
from targets.harness.prng import CORRECTNESS_SEED, Stream, mix_seeds

KERNEL = Path(__file__).with_name("kernels.py")
SPEED_PATCH_WORDS = 32                 # fresh packed words per timed call (<= 32 chunks re-decoded to verify)


def patched(words: np.ndarray, call: dict[str, np.ndarray]) -> np.ndarray:
    out = words.copy()
    out[call["patch_pos"]] = call["patch_words"]
    return out


def expected_values(words: np.ndarray, starts: np.ndarray, n: int, t: int, call: dict[str, np.ndarray],
                    base: np.ndarray | None = None) -> np.ndarray:
    """The page's values after the call's patch: decoded by the oracle, or (given the unpatched
    page's values ``base``) those with only the patched chunks decoded again."""
    page = patched(words, call)
    if base is None:
        return reference.decode_page(page, starts, n, t)
    out = base.copy()
    lanes = CHUNK // t
    for c in np.unique(np.searchsorted(starts, call["patch_pos"], side="right") - 1).tolist():
        s = int(starts[c])
        values = reference.unpack_chunk(page[s + 1:s + 1 + int(page[s]) * lanes], int(page[s]), t)
        m = min(CHUNK, n - c * CHUNK)
        out[c * CHUNK:c * CHUNK + m] = values[:m]
    return out


def judge(out: dict[str, np.ndarray], want: np.ndarray, words: np.ndarray, starts: np.ndarray, t: int) -> str | None:
    """The decoded values bit for bit, and the guard past them untouched."""
    got, guard = out.get("values"), out.get("guard")
    for name, arr, size in (("values", got, want.size), ("guard", guard, None)):
        if type(arr) is not np.ndarray or arr.dtype != DTYPES[t] or arr.ndim != 1 or (size is not None and arr.size != size):
            return f"{name}: expected a 1-d uint{t} numpy.ndarray{f' of {size}' if size is not None else ''}, got {arr!r:.80}"
    assert isinstance(got, np.ndarray) and isinstance(guard, np.ndarray)
    if guard.size < 1 or np.any(guard.view(np.uint8) != POISON_BYTE):
        return f"written past the declared output of {want.size} values (the guard after it changed)"
    bad = np.flatnonzero(got != want)
    if bad.size:
        i = int(bad[0])
        c = i // CHUNK
        poison = DTYPES[t].type(int.from_bytes(bytes([POISON_BYTE]) * (t // 8), "little"))
        what = "never written (still the poison)" if got[i] == poison else str(int(got[i]))
        return (f"value {i} (chunk {c} of {starts.size}, width {int(words[starts[c]])}, position {i % CHUNK}): "
                f"got {what}, expected {int(want[i])} ({bad.size} of {want.size} values differ)")
    return None


def _case(name: str, t: int, words: np.ndarray, starts: np.ndarray, n: int, seed: int) -> Case:
    calls = [inputs.patches(words, starts, t, mix_seeds(seed, name, "call", i), count)
             for i, count in enumerate((0, inputs.BATTERY_PATCH_WORDS))]
    return Case(name=name, params={"bits": t, "num_values": n}, arrays={"words": words, "chunk_starts": starts},
                calls=calls)


def cases(seed: int) -> list[Case]:
    """The fixed battery (every edge case for every T) plus one fresh page per T from the trial seed;
    each page decoded as encoded and with fresh words patched in."""
    fx = inputs.fixtures()
    out = []
    for name in inputs.BATTERY_NAMES:
        key = f"battery/{name}/"
        t = int(name.rsplit("/u", 1)[1])
        out.append(_case(name, t, fx[key + "words"], fx[key + "starts"], fx[key + "values"].size, CORRECTNESS_SEED))
    for t in inputs.BITS:
        page = inputs.fresh_page(t, seed)
        words, starts = inputs.encode_page(page.values, t)
        out.append(_case(page.name, t, words, starts, page.values.size, seed))
    return out


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    t, n = int(case.params["bits"]), int(case.params["num_values"])
    words, starts = case.arrays["words"], case.arrays["chunk_starts"]
    return judge(out, expected_values(words, starts, n, t, case.calls[call]), words, starts, t)


def workload(combo: SpeedCombo, values: np.ndarray, words: np.ndarray, starts: np.ndarray, chunks: int | None = None
             ) -> Workload:
    """One speed combo: its page (or its first ``chunks`` chunks) and fresh patches per call."""
    if chunks is not None:
        end = int(starts[chunks]) if chunks < starts.size else words.size
        values, words, starts = values[:chunks * CHUNK], words[:end], starts[:chunks]
    t, n = combo.t, values.size
    where = inputs.packed_positions(words, starts, t)

    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        stream = Stream(mix_seeds(seed, "keys", combo.shape, combo.distribution, n))
        return [{**inputs.patches(words, starts, t, mix_seeds(seed, "speed", combo.shape, combo.distribution, n, i),
                                  SPEED_PATCH_WORDS, where), "key": stream.u64(2)} for i in range(count)]

    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        buf = empty_output(n, t)
        buf[:n] = expected_values(words, starts, n, t, call, base=values)
        want = digest(buf, call["key"])

        def check_digest(out: dict[str, np.ndarray]) -> str | None:
            got = out.get("digest")
            if type(got) is not np.ndarray or got.dtype != np.uint64 or got.shape != (1,):
                return f"digest: expected uint64[1], got {got!r:.80}"
            if got[0] != want[0]:
                return ("the decoded page (or the guard after it) differs from the oracle's: keyed digest "
                        f"{int(got[0]):#x}, expected {int(want[0]):#x}")
            return None
        return check_digest

    return Workload(shape=combo.shape, distribution=combo.distribution, params={"bits": t, "num_values": n},
                    arrays={"words": words, "chunk_starts": starts}, queries=queries, verify=verify)


def _speed_arrays(fx: dict[str, np.ndarray], combo: SpeedCombo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = f"speed/{combo.shape}/{combo.distribution}/"
    return fx[key + "values"], fx[key + "words"], fx[key + "starts"]


def workloads() -> list[Workload]:
    fx = inputs.fixtures()
    return [workload(combo, *_speed_arrays(fx, combo)) for combo in inputs.SPEED_COMBOS]


def _profile_workload(fx: dict[str, np.ndarray], combo: SpeedCombo, size: dict[str, int]) -> Workload:
    return workload(combo, *_speed_arrays(fx, combo), chunks=size["chunks"])


def profile_shapes() -> list[ProfileShape]:
    """Per combo: the op timed on the first quarter, half and all of its page's chunks; its time
    splits into a per-chunk cost (unpack, output prefill and digest) and a fixed part per call."""
    fx = inputs.fixtures()
    full = inputs.SPEED_VALUES // CHUNK
    return [ProfileShape(shape=combo.shape, distribution=combo.distribution,
                         values={"chunks": (full // 4, full // 2, full)}, at={"chunks": full},
                         workload=partial(_profile_workload, fx, combo))
            for combo in inputs.SPEED_COMBOS]


PLAN = TargetPlan(name="bitpack", ops_module="targets.bitpack.target", cases=cases, check=check,
                  workloads=workloads,
                  profile=ProfileSpec(factors={"chunks": "per 1,024-value chunk (unpack; the op's prefill and digest)"},
                                      fixed_label="per call (patch, output allocation)", shapes=profile_shapes))

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
