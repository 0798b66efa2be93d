"""fsst speed anchors: kernels, the oracle and Lance itself decoding identical strings, one thread.

For each of the 5 speed workloads (one ~1 MB page per distribution, the harness's own fixtures),
times one page decode at a time, the arms interleaved call by call (common.arm_order):

  baseline  the shipped kernels.py (the port of Lance's decompress / decompress_bulk per chunk):
            ``decode`` into freshly allocated outputs (as Lance allocates its own)
  kernel    the same with ``--kernel`` (default: the shipped kernels.py)

(the oracle's plain byte loop is timed once, not interleaved: it is ~1,000x slower), and,
separately, **Lance itself**: pylance 2.1 files of the same strings (fresh strings of the same
distribution, 1/2, 1, 2 and 4 pages' worth, written with ``LanceFileWriter(version="2.1")``; the script checks in the file's
metadata that Lance chose FSST for every page and says so where it did not), each read with
``LanceFileReader(path).read_all(batch_size=<all of it>).to_table()`` in the same interleaved
order. A read includes opening the file, I/O from the page cache and building the Arrow array;
the slope of its time over the four sizes is Lance's cost per decoded byte, and slope x the page's
size its decode of one page (the intercept and R² printed beside it; and the slope of the
process's CPU time over all threads, in case Lance spreads the work over its I/O threads).

With ``--vortex-python`` (a Python with vortex-data installed in a scratch venv, not a
dependency of this project), **vortex-data** compresses the same strings (``vortex.compress``: its
own choice, FSST for text; printed) and decodes them to Arrow in a subprocess, one thread,
median of ``--calls`` ``to_arrow_array()`` calls; not interleaved with the other arms.

Every answer is checked: the kernels' bytes and offsets against the oracle's, Lance's column and
vortex's against the original strings.

Run:  python benchmarks/fsst_anchors.py [--calls 8] [--kernel path/to/kernels.py] [--vortex-python PY]
"""

from __future__ import annotations

from common import ROOT, arm_order, run_in_other_python, slope_fit, timed  # first: one thread and a private numba cache before numpy loads

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from targets.fsst import inputs, reference
from targets.harness.prng import SPEED_SEED, mix_seeds
from targets.harness.worker import load_kernel

SHIPPED = ROOT / "targets" / "fsst" / "kernels.py"
TILES = (0.5, 1, 2, 4)


def lance_strings(dist: str, sizes: tuple[float, ...]) -> list[Any]:
    """Strings of ``dist`` (fresh ones, not the page tiled: repeats would make Lance pick a
    dictionary), the first ``k`` pages' worth of bytes for each k in ``sizes``, as pyarrow arrays."""
    import pyarrow as pa
    strings = inputs.strings_of(dist, mix_seeds(SPEED_SEED, "fsst-anchor", dist), int(max(sizes) * inputs.SPEED_BYTES))
    ends = np.cumsum([len(v) for v in strings])
    out = []
    for k in sizes:
        m = int(np.searchsorted(ends, k * inputs.SPEED_BYTES)) + 1
        out.append(pa.array([v.decode() for v in strings[:m]], type=pa.string()))
    return out


def lance_file(path: Path, arr: Any) -> list[str]:
    """Write ``arr`` as a Lance 2.1 file; each page's compression as its metadata names it."""
    import pyarrow as pa
    from lance.file import LanceFileReader, LanceFileWriter

    table = pa.table({"s": arr})
    with LanceFileWriter(str(path), table.schema, version="2.1") as writer:
        writer.write_batch(table)
    return ["Fsst" if "fsst" in str(page.encoding).lower() else "other"
            for page in LanceFileReader(str(path)).metadata().columns[0].pages]


def lance_read(path: Path, rows: int) -> Callable[[], Any]:
    from lance.file import LanceFileReader

    def run() -> Any:
        return LanceFileReader(str(path)).read_all(batch_size=rows).to_table().column(0)
    return run


VORTEX = """
import json, sys, time
import numpy as np, pyarrow as pa, vortex as vx
vx.set_worker_threads(1)
d = np.load(sys.argv[1])
calls = int(sys.argv[2])
want = pa.StringArray.from_buffers(d["o"].size - 1, pa.py_buffer(d["o"]), pa.py_buffer(d["b"].tobytes()))
arr = vx.compress(vx.array(want))
tree = arr.display_tree()
ms = []
for i in range(calls + 1):
    t0 = time.perf_counter_ns()
    got = arr.to_arrow_array()
    ms.append((time.perf_counter_ns() - t0) / 1e6)
ok = got.cast(pa.string()).equals(want) if hasattr(got, "cast") else False
print(json.dumps({"ms": float(np.median(ms[1:])), "ok": bool(ok), "encoding": tree.split("root: ")[1].split("(")[0]}))
"""


def vortex_decode(python: str, data: np.ndarray, offsets: np.ndarray, calls: int, tmp: Path) -> dict[str, Any]:
    """vortex-data's decode of the strings in a subprocess of ``python``: median ms, exact, encoding."""
    path = tmp / "vortex-strings.npz"
    np.savez(path, b=data, o=offsets.astype(np.int32))
    return run_in_other_python(python, VORTEX, str(path), str(calls))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=8, help="timed decodes per arm and workload (default 8)")
    ap.add_argument("--kernel", type=Path, default=SHIPPED, help="kernels.py to time (default: shipped)")
    ap.add_argument("--vortex-python", default=None, help="a Python with vortex-data installed (optional)")
    args = ap.parse_args(argv)
    import lance
    import pyarrow as pa

    baseline_mod = load_kernel(str(SHIPPED), "anchor_baseline_kernels")
    kernel_mod = load_kernel(str(args.kernel), "anchor_kernels")
    fx = inputs.fixtures()
    tmp = Path(tempfile.mkdtemp(prefix="fsst-anchor-"))
    print(f"kernel {args.kernel}  numpy {np.__version__}  pylance {lance.__version__}  {args.calls} calls/workload  1 thread")
    print(f"{'workload':<12}{'MB':>6}{'base ms':>9}{'kern ms':>9}{'oracle ms':>10}{'Lance ms':>10}{'(fixed)':>9}{'R2':>6}"
          f"{'CPU ms':>8}{'kern/base':>10}{'base/Lance':>11}{'kern/Lance':>11}{'vortex ms':>10}  Lance's encoding, checks")
    ratios: dict[str, list[float]] = {"kern/base": [], "base/Lance": [], "kern/Lance": []}
    for dist in inputs.SPEED_DISTRIBUTIONS:
        page = inputs.page_of(fx, f"speed/{dist}")
        want_b, want_o = fx[f"speed/{dist}/out_bytes"], fx[f"speed/{dist}/out_offsets"]
        n, size = want_o.size - 1, want_b.size

        def decoder(mod: Any) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
            k = mod.FsstPageDecoder(page["symbol_table"])

            def run() -> tuple[np.ndarray, np.ndarray]:
                ob, oo = np.empty(size, dtype=np.uint8), np.empty(n + 1, dtype=want_o.dtype)
                k.decode(page["in_bytes"], page["in_offsets"], page["chunk_rows"], oo, ob)
                return ob, oo
            return run

        arms = [decoder(baseline_mod), decoder(kernel_mod)]
        _, oracle_ms, _ = timed(lambda: reference.decode(page["symbol_table"], page["in_bytes"], page["in_offsets"]))
        files, sizes, wants, kinds = [], [], [], []
        for k, arr in zip(TILES, lance_strings(dist, TILES)):
            path = tmp / f"{dist}-{k}.lance"
            kinds += lance_file(path, arr)
            files.append(lance_read(path, len(arr)))
            sizes.append(int(sum(len(v) for v in arr.buffers()[2:3])))
            wants.append(arr)
        assert sizes[1] >= inputs.SPEED_BYTES
        everything: list[Callable[[], Any]] = [*arms, *files]
        for fn in everything:
            fn()
        times = np.empty((args.calls, len(arms)))
        lance_ms = np.empty((args.calls, len(files)))
        lance_cpu = np.empty((args.calls, len(files)))
        exact, lance_ok = 0, True
        for i in range(args.calls):
            got: dict[int, Any] = {}
            for j in arm_order(i, len(everything)):
                got[j], ms, cpu = timed(everything[j])
                if j < len(arms):
                    times[i, j] = ms
                else:
                    lance_ms[i, j - len(arms)], lance_cpu[i, j - len(arms)] = ms, cpu
            exact += all(np.array_equal(got[j][0], want_b) and np.array_equal(got[j][1], want_o) for j in range(len(arms)))
            lance_ok &= all(got[len(arms) + t].cast(pa.string()).equals(pa.chunked_array([wants[t]]))
                            for t in range(len(files)))
        med = np.median(times, axis=0)
        slope, fixed, r2 = slope_fit(sizes, np.median(lance_ms, axis=0))
        cpu_slope, _, _ = slope_fit(sizes, np.median(lance_cpu, axis=0))
        lance_page = slope * size
        vx = vortex_decode(args.vortex_python, want_b, want_o, args.calls, tmp) if args.vortex_python else None
        ratios["kern/base"].append(med[1] / med[0])
        ratios["base/Lance"].append(med[0] / lance_page)
        ratios["kern/Lance"].append(med[1] / lance_page)
        print(f"{dist:<12}{size / 1e6:>6.2f}{med[0]:>9.3f}{med[1]:>9.3f}{oracle_ms:>10.0f}{lance_page:>10.3f}{fixed:>9.2f}"
              f"{r2:>6.2f}{cpu_slope * size:>8.3f}{med[1] / med[0]:>10.2f}{med[0] / lance_page:>11.2f}"
              f"{med[1] / lance_page:>11.2f}{vx['ms'] if vx else float('nan'):>10.3f}  "
              f"FSST {kinds.count('Fsst')}/{len(kinds)} pages; kernels {exact}/{args.calls} exact, Lance {'exact' if lance_ok else 'MISMATCH'}"
              + (f"; vortex {vx['encoding']} {'exact' if vx['ok'] else 'MISMATCH'}" if vx else ""))
    gm = {k: float(np.exp(np.mean(np.log(v)))) for k, v in ratios.items()}
    print(f"{'geomean':<{12 + 6 + 9 * 2 + 10 + 10 + 9 + 6 + 8}}{gm['kern/base']:>10.2f}{gm['base/Lance']:>11.2f}"
          f"{gm['kern/Lance']:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
