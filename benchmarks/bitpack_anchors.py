"""bitpack speed anchors: kernels, numpy and Lance itself decoding identical pages, one thread.

For each of the 6 speed workloads (one page of 1,048,576 values per combo, the harness's own
fixtures), times one page decode at a time, the arms interleaved call by call (in a balanced
order: common.arm_order):

  baseline  the shipped kernels.py (the port of Lance's unchunk + FastLanes unpack loop):
            ``decode`` into a freshly allocated output (as Lance allocates its own)
  kernel    the same with ``--kernel`` (default: the shipped kernels.py)
  numpy     the oracle (``reference.decode_page``: numpy ``unpackbits`` per chunk)

and, separately, **Lance itself**: pylance 2.1 files of the same values (the first 1/4, 1/2, 1
2 and 4 pages' worth, written with ``LanceFileWriter(version="2.1")``; the script checks that
Lance chose ``InlineBitpacking`` for every page, and says so where it did not), each read with
``LanceFileReader(path).read_all(batch_size=<all of it>).to_table()`` in the same interleaved order. Reading includes
opening the file, I/O from the page cache and building the Arrow array; the slope of its time
over the four sizes is Lance's cost per value, and slope x 1,048,576 its decode of one page
(the intercept, the per-read fixed cost, is printed beside it, and the slope of the process's
CPU time over all threads, in case Lance spreads the work over its I/O threads).

With ``--vortex-python`` (a Python with vortex-data installed, e.g. a scratch venv: it is not a
dependency of this project), **vortex-data** (spiraldb's FastLanes, the crate Lance's bitpacking
is vendored from) decodes the same values after ``vortex.compress`` (its own choice of encoding,
one bit width per array rather than per chunk: printed beside it) in a subprocess, one thread,
median of ``--calls`` ``to_arrow_array()`` calls; not interleaved with the other arms.

Every arm's answer is checked: the kernels and numpy against the original values, Lance's table
too, and the shipped kernel also decodes the page Lance wrote (its value buffer from the file,
as the kernel API takes it), bit for bit: the layout is Lance's own.

Run:  python benchmarks/bitpack_anchors.py [--calls 8] [--kernel path/to/kernels.py] [--vortex-python PY]
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

from targets.bitpack import inputs, reference, run_experiment
from targets.harness.worker import load_kernel

SHIPPED = ROOT / "targets" / "bitpack" / "kernels.py"
ARMS = ("baseline", "kernel", "numpy")
LANCE_SIZES = (1 << 19, 1 << 20, 1 << 21, 1 << 22)


def lance_pages(path: Path, values: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """Write ``values`` as a Lance 2.1 file; per page: (its value compression, its value buffer as
    uintT words, the word offset of every chunk's header, its value count). A miniblock chunk is a
    u16 level count (0: no rep/def here), a u16 per buffer size, padding to 8 bytes, then the value
    buffer; the page's first buffer holds one u16 per chunk: (chunk bytes / 8 - 1) << 4 | log2(values)."""
    import pyarrow as pa
    from lance.file import LanceFileReader, LanceFileWriter

    t = values.dtype.itemsize * 8
    table = pa.table({"x": pa.array(values)})
    with LanceFileWriter(str(path), table.schema, version="2.1") as writer:
        writer.write_batch(table)
    raw = path.read_bytes()
    out = []
    for page in LanceFileReader(str(path)).metadata().columns[0].pages:
        enc = page.encoding
        kind = "InlineBitpacking" if "InlineBitpacking" in enc else enc.split("compression: Some(")[-1].split("(")[0].strip()
        if kind != "InlineBitpacking" or len(page.buffers) != 2:
            out.append((kind, np.zeros(0, values.dtype), np.zeros(0, np.int64), 0))
            continue
        meta_buf, data_buf = page.buffers
        meta = np.frombuffer(raw[meta_buf.position:meta_buf.position + meta_buf.size], dtype="<u2")
        data = np.frombuffer(raw[data_buf.position:data_buf.position + data_buf.size], dtype=np.uint8)
        starts, offset = [], 0
        for m in meta.tolist():
            levels = int(np.frombuffer(data[offset:offset + 2].tobytes(), dtype="<u2")[0])
            if levels != 0:
                raise ValueError("a chunk with rep/def levels: not a plain integer column")
            starts.append((offset + 8) // (t // 8))
            offset += ((m >> 4) + 1) * 8
        num_values = int(enc.split("num_items: ")[1].split(",")[0])
        out.append((kind, data.view(values.dtype), np.array(starts, dtype=np.int64), num_values))
    return out


def lance_read(path: Path, size: int) -> Callable[[], np.ndarray]:
    """Lance's whole read of the file, as one batch (``read_all``'s default of 1,024 rows per batch
    would add a per-batch cost to every 1,024 values)."""
    from lance.file import LanceFileReader

    def run() -> np.ndarray:
        return LanceFileReader(str(path)).read_all(batch_size=size).to_table().column(0).to_numpy()
    return run


VORTEX = """
import json, sys, time
import numpy as np, pyarrow as pa, vortex as vx
vx.set_worker_threads(1)
values = np.load(sys.argv[1])
calls = int(sys.argv[2])
arr = vx.compress(vx.array(pa.array(values)))
tree = arr.display_tree()
ms = []
for i in range(calls + 1):
    t0 = time.perf_counter_ns()
    got = arr.to_arrow_array()
    ms.append((time.perf_counter_ns() - t0) / 1e6)
ok = bool(np.array_equal(got.to_numpy(zero_copy_only=False), values))
print(json.dumps({"ms": float(np.median(ms[1:])), "ok": ok, "encoding": tree.split("root: ")[1].split("(")[0]}))
"""


def vortex_decode(python: str, values: np.ndarray, calls: int, tmp: Path) -> dict[str, Any]:
    """vortex-data's decode of ``values`` in a subprocess of ``python``: median ms, exact, encoding."""
    path = tmp / "vortex-values.npy"
    np.save(path, values)
    return run_in_other_python(python, VORTEX, str(path), str(calls))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=8, help="timed decodes per arm and workload (default 8)")
    ap.add_argument("--kernel", type=Path, default=SHIPPED, help="kernels.py to time (default: shipped)")
    ap.add_argument("--vortex-python", default=None, help="a Python with vortex-data installed (optional)")
    args = ap.parse_args(argv)
    import lance

    baseline_mod = load_kernel(str(SHIPPED), "anchor_baseline_kernels")
    kernel_mod = load_kernel(str(args.kernel), "anchor_kernels")
    fx = inputs.fixtures()
    tmp = Path(tempfile.mkdtemp(prefix="bitpack-anchor-"))
    print(f"kernel {args.kernel}  numpy {np.__version__}  pylance {lance.__version__}  {args.calls} calls/workload  1 thread")
    head = f"{'workload':<24}" + "".join(f"{a + ' ms':>12}" for a in ARMS) + f"{'Lance ms':>10}{'(fixed)':>9}{'R2':>6}{'CPU ms':>8}"
    print(head + f"{'kern/base':>11}{'base/Lance':>11}{'kern/Lance':>11}{'vortex ms':>10}  Lance's encoding, checks; vortex's")
    ratios: dict[str, list[float]] = {"kern/base": [], "base/Lance": [], "kern/Lance": []}
    for combo in inputs.SPEED_COMBOS:
        values, words, starts = run_experiment._speed_arrays(fx, combo)
        t, n = combo.t, values.size
        base, kern = baseline_mod.BitpackDecoder(t), kernel_mod.BitpackDecoder(t)

        def decoder(k: Any) -> Callable[[], np.ndarray]:
            def run() -> np.ndarray:
                out = np.empty(n, dtype=values.dtype)
                k.decode(words, starts, n, out)
                return out
            return run

        arms = [decoder(base), decoder(kern), lambda: reference.decode_page(words, starts, n, t)]
        full = np.concatenate([values, inputs.speed_values(combo, 4 * n)[n:]])    # more pages for the larger sizes
        files, encodings, lance_ok = [], set(), True
        for size in LANCE_SIZES:
            path = tmp / f"{combo.shape}-{combo.distribution}-{size}.lance"
            pages = lance_pages(path, full[:size])
            encodings |= {kind for kind, *_ in pages}
            files.append(lance_read(path, size))
            if size == n:                         # the shipped kernel decodes Lance's own page bytes
                for kind, lw, ls, ln in pages:
                    if kind == "InlineBitpacking" and ln:
                        out = np.empty(ln, dtype=values.dtype)
                        base.decode(lw, ls, ln, out)
                        lance_ok &= bool(np.array_equal(out, values[:ln]))
        for arm in arms + files:                  # warm-up: numba loads, page cache
            arm()
        times = np.empty((args.calls, len(arms)))
        lance_times = np.empty((args.calls, len(files)))
        lance_cpu = np.empty((args.calls, len(files)))
        agreed = 0
        everything: list[Callable[[], Any]] = [*arms, *files]
        for i in range(args.calls):
            results: dict[int, Any] = {}
            for j in arm_order(i, len(everything)):
                results[j], ms, cpu = timed(everything[j])
                if j < len(arms):
                    times[i, j] = ms
                else:
                    lance_times[i, j - len(arms)] = ms
                    lance_cpu[i, j - len(arms)] = cpu
            agreed += all(np.array_equal(results[j], values) for j in range(len(arms)))
            agreed_lance = all(np.array_equal(results[len(arms) + k], full[:s]) for k, s in enumerate(LANCE_SIZES))
            lance_ok &= agreed_lance
        med = np.median(times, axis=0)
        slope, fixed, r2 = slope_fit(LANCE_SIZES, np.median(lance_times, axis=0))
        cpu_slope, _, _ = slope_fit(LANCE_SIZES, np.median(lance_cpu, axis=0))
        lance_page = slope * n
        vortex = vortex_decode(args.vortex_python, values, args.calls, tmp) if args.vortex_python else None
        ratios["kern/base"].append(med[1] / med[0])
        ratios["base/Lance"].append(med[0] / lance_page)
        ratios["kern/Lance"].append(med[1] / lance_page)
        print(f"{combo.shape + '/' + combo.distribution:<24}" + "".join(f"{m:>12.3f}" for m in med)
              + f"{lance_page:>10.3f}{fixed:>9.2f}{r2:>6.2f}{cpu_slope * n:>8.3f}{med[1] / med[0]:>11.2f}{med[0] / lance_page:>11.2f}"
              f"{med[1] / lance_page:>11.2f}{vortex['ms'] if vortex else float('nan'):>10.3f}  "
              f"{'+'.join(sorted(encodings))}; kernels {agreed}/{args.calls} exact, Lance {'exact' if lance_ok else 'MISMATCH'}"
              + (f"; vortex {vortex['encoding']} {'exact' if vortex['ok'] else 'MISMATCH'}" if vortex else ""))
    gm = {k: float(np.exp(np.mean(np.log(v)))) for k, v in ratios.items()}
    print(f"{'geomean':<{24 + 12 * len(ARMS) + 33}}{gm['kern/base']:>11.2f}{gm['base/Lance']:>11.2f}{gm['kern/Lance']:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
