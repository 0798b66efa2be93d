"""dictionary speed anchors: kernels, pyarrow, polars (if installed) and Lance itself on identical pages, one thread.

For each of the speed workloads (the harness's own pools and dictionaries: 2**19-row pages of
``str-D1k`` / ``str-D64k`` x uniform, zipf, runs and ``uuid-D64k`` x uniform, runs) and
``--calls`` fresh pages per workload, times one page at a time, the arms interleaved call by call
in a balanced order (common.arm_order):

  baseline   the op the harness times (``target.OPS["speed"]``: the poison-filled output
             allocation and one ``decode`` call) with the shipped kernels.py (the port of Lance's loop)
  kernel     the same op with ``--kernel`` (default: the shipped kernels.py)
  arrow      pyarrow (Arrow C++): ``DictionaryArray.from_arrays(indices, dictionary).dictionary_decode()``,
             the same decode into a fresh string (or fixed_size_binary(16)) array
  take       pyarrow ``pc.take(dictionary, indices)`` (the same result, the generic kernel)
  polars     a Categorical series of the page (built off the clock from the Arrow dictionary array)
             cast to String, where polars is importable (omitted otherwise) and the values are text

Every arm's answer is checked: the kernels' sampled rows and bytes by the harness's own check,
pyarrow's (and polars') whole output buffers against the oracle.

Lance itself (``--lance``, the default): per text shape, a Lance 2.1 file of one column is written
(``lance.file.LanceFileWriter(version="2.1")``) from the uniform pool at 2**17, 2**18 and 2**19
rows, once with pylance's default choice of encoding (printed: it is FSST, not a dictionary, for
most of these pages) and once with ``LANCE_ENCODING_DICT_DIVISOR=1 LANCE_ENCODING_DICT_MAX_CARDINALITY=1000000`` (the file then is a mini-block
page with a dictionary: checked, and only those files are timed); the script times ``LanceFileReader.read_all(batch_size=rows)`` (one thread, from the page
cache), several times each, sizes interleaved. The slope of the median time over rows is Lance's
decode cost per row (the indices' bit-unpacking and the dictionary decode, with whatever per-row
work the reader adds), its intercept the fixed cost of opening a read. The kernels' slopes come
from the same sizes.

Run:  python benchmarks/dictionary_anchors.py [--calls 8] [--kernel path/to/kernels.py] [--seed 1] [--no-lance]
"""

from __future__ import annotations

from common import ROOT, arm_order  # first: one thread and a private numba cache before numpy loads

import argparse
import gc
import importlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from targets.dictionary import inputs, reference, run_experiment, target
from targets.harness.worker import load_kernel

pl: Any
try:                                                 # optional anchor
    pl = importlib.import_module("polars")
except ImportError:                                  # pragma: no cover - depends on the machine
    pl = None

SHIPPED = ROOT / "targets" / "dictionary" / "kernels.py"
# pylance 14.0.2's defaults write FSST, not a dictionary, for str-D64k at every size and str-D1k at
# 2**19 rows; with both variables below its size rule chooses the dictionary, as d2039d750's does
# (measured: neither alone is enough for str-D64k).
FORCE_DICTIONARY = {"LANCE_ENCODING_DICT_DIVISOR": "1", "LANCE_ENCODING_DICT_MAX_CARDINALITY": "1000000"}
LANCE_ROWS = (1 << 17, 1 << 18, 1 << 19)        # up to the speed page: the pools hold 1.25 x that


def arrow_dictionary(arrays: dict[str, np.ndarray]) -> pa.Array:
    if "dict_offsets" in arrays:
        offsets = arrays["dict_offsets"]
        return pa.Array.from_buffers(pa.string(), offsets.size - 1,
                                     [None, pa.py_buffer(offsets.view(np.int32)), pa.py_buffer(arrays["dict_bytes"])])
    d = arrays["dictionary"]
    return pa.Array.from_buffers(pa.binary(target.VALUE_WIDTH), d.shape[0], [None, pa.py_buffer(d.reshape(-1))])


def arrow_buffers(arr: Any, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets as uint32, data) of a string array, or (empty, data) of a fixed-size binary one."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    bufs = arr.buffers()
    if pa.types.is_fixed_size_binary(arr.type):
        return np.zeros(0, np.uint32), np.frombuffer(bufs[1], np.uint8, rows * target.VALUE_WIDTH)
    offsets = np.frombuffer(bufs[1], np.int32, rows + 1, arr.offset * 4).view(np.uint32)
    return offsets, np.frombuffer(bufs[2], np.uint8, int(offsets[-1]) if rows else 0)


def check_whole(offsets: np.ndarray, data: np.ndarray, page: np.ndarray, arrays: dict[str, np.ndarray]) -> bool:
    if "dict_offsets" in arrays:
        want_off, want = reference.decode_varwidth(page, arrays["dict_offsets"], arrays["dict_bytes"])
        return np.array_equal(offsets - offsets[0], want_off) and np.array_equal(data[int(offsets[0]):], want)
    return np.array_equal(data, reference.decode_fixed(page, arrays["dictionary"]).reshape(-1))


def arrow_indices(page: np.ndarray) -> pa.Array:
    """The page as an Arrow int32 array, zero-copy."""
    return pa.Array.from_buffers(pa.int32(), page.size, [None, pa.py_buffer(page)])


@dataclass(frozen=True)
class Anchor:
    """A library arm: ``prepare`` (untimed) turns the page into the library's input, ``run`` is
    the timed decode, ``finish`` (untimed) gives its (offsets as uint32, data) for the check."""

    prepare: Callable[[np.ndarray], Any]
    run: Callable[[Any], Any]
    finish: Callable[[Any, int], tuple[np.ndarray, np.ndarray]]


def anchor_arms(arrays: dict[str, np.ndarray]) -> dict[str, Anchor]:
    dictionary = arrow_dictionary(arrays)
    arms = {
        "arrow": Anchor(arrow_indices, lambda idx: pa.DictionaryArray.from_arrays(idx, dictionary).dictionary_decode(),
                        arrow_buffers),
        "take": Anchor(arrow_indices, lambda idx: pc.take(dictionary, idx), arrow_buffers),
    }
    if pl is not None and "dict_offsets" in arrays:
        # Categorical -> String: the page as a polars categorical (built off the clock from the
        # Arrow dictionary array), then the cast that decodes it.
        arms["polars"] = Anchor(
            lambda page: pl.from_arrow(pa.DictionaryArray.from_arrays(arrow_indices(page), dictionary)),
            lambda series: series.cast(pl.String),
            lambda out, rows: arrow_buffers(out.to_arrow().cast(pa.string()), rows))
    return arms


def bench_workloads(args: argparse.Namespace, base_mod: Any, kern_mod: Any) -> dict[str, tuple[float, float]]:
    """Per combo: the timed arms; returns {combo: (baseline ns/row, kernel ns/row)}."""
    names = ["baseline", "kernel", "arrow", "take"] + (["polars"] if pl is not None else [])
    print(f"{'workload':<20}" + "".join(f"{a + ' ns/row':>17}" for a in names) + f"{'kern/base':>11}{'agree':>8}")
    ratios, out = [], {}
    for w in run_experiment.workloads():
        base, kern = (target.build(m, w.params, w.arrays) for m in (base_mod, kern_mod))
        extra = anchor_arms(w.arrays)
        arm_names = ["baseline", "kernel", *extra]
        kernels_op = {"baseline": base, "kernel": kern}

        def run(name: str, call: dict[str, np.ndarray], prepared: dict[str, Any]) -> Any:
            # The kernels' op cuts its page from the pool itself; an anchor decodes its input,
            # prepared from the page beforehand, off the clock.
            if name in kernels_op:
                return target.OPS["speed"](kernels_op[name], call)
            return extra[name].run(prepared[name])

        calls = w.queries(args.seed, args.calls + 1)
        times = np.full((args.calls, len(names)), np.nan)
        agreed = 0
        for i, call in enumerate(calls):
            page = reference.window_indices(w.arrays["pool"], call)
            prepared = {name: anchor.prepare(page) for name, anchor in extra.items()}
            results: dict[str, Any] = {}
            gc.disable()
            try:
                for j in arm_order(i, len(arm_names)):
                    t0 = time.perf_counter_ns()
                    results[arm_names[j]] = run(arm_names[j], call, prepared)
                    if i:                                      # call 0 warms up: numba loads, caches
                        times[i - 1, names.index(arm_names[j])] = (time.perf_counter_ns() - t0) / inputs.PAGE_ROWS
            finally:
                gc.enable()
            if i:
                check = w.verify(call)
                ok = all(check(results[name]) is None for name in kernels_op)
                ok = ok and all(check_whole(*extra[name].finish(results[name], page.size), page, w.arrays)
                                for name in extra)
                agreed += ok
        med = np.median(times, axis=0)
        ratios.append(med[1] / med[0])
        out[w.combo] = (float(med[0]), float(med[1]))
        print(f"{w.combo:<20}" + "".join(f"{m:>17.2f}" if np.isfinite(m) else f"{'-':>17}" for m in med)
              + f"{med[1] / med[0]:>11.2f}{f'{agreed}/{args.calls}':>8}", flush=True)
    print(f"{'geomean kern/base':<{20 + 17 * len(names)}}{float(np.exp(np.mean(np.log(ratios)))):>11.2f}")
    return out


def lance_layout(path: str) -> str:
    """'dictionary (N items)' when every page of the file's column is a mini-block page with a
    dictionary, else what the first other page is."""
    from lance.file import LanceFileReader
    pages = LanceFileReader(path).metadata().columns[0].pages
    for page in pages:
        text = str(page.encoding)
        if "MiniBlockLayout" not in text or "dictionary: Some(" not in text:
            return "not dictionary: " + " ".join(text.split())[:160]
    items = [int(t.split("num_dictionary_items:")[1].split(",")[0]) for t in (str(p.encoding) for p in pages)]
    return f"dictionary ({len(pages)} page(s), {max(items)} items)"


def default_layout(table: pa.Table, tmp: Path) -> str:
    """The layout pylance chooses for ``table`` with its default settings: written by a fresh
    process (Lance reads its encoding variables once per process, and this one has set them)."""
    src, dst = tmp / "default.arrow", tmp / "default.lance"
    with pa.OSFile(str(src), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
        ipc.write_table(table)
    code = ("import sys, pyarrow as pa; from lance.file import LanceFileWriter; "
            "t = pa.ipc.open_file(sys.argv[1]).read_all(); w = LanceFileWriter(sys.argv[2], t.schema, version='2.1'); "
            "w.write_batch(t); w.close()")
    env = {k: v for k, v in os.environ.items() if k not in FORCE_DICTIONARY}
    subprocess.run([sys.executable, "-c", code, str(src), str(dst)], check=True, env=env)
    return lance_layout(str(dst)).split(":")[0].split(" (")[0]


def bench_lance(args: argparse.Namespace, base_mod: Any, kern_mod: Any) -> None:
    """Lance 2.1 files of the uniform text pools at several sizes: read_all's slope per row, and
    the kernels' op slopes at the same sizes, interleaved. Lance reads its encoding variables
    once per process: ``FORCE_DICTIONARY`` is set before this process writes any file."""
    os.environ.update(FORCE_DICTIONARY)
    from lance.file import LanceFileReader, LanceFileWriter
    fx = inputs.fixtures()
    print(f"\nLance itself: a 2.1 file per size, read_all(batch_size=rows), one thread; slope over "
          f"{', '.join(str(r) for r in LANCE_ROWS)} rows (ns/row) and intercept (us)")
    print(f"{'shape':<12}{'timed layout':<36}" + "".join(f"{a:>22}" for a in ("lance", "baseline", "kernel"))
          + f"{'lance/base':>12}{'lance/kern':>12}")
    with tempfile.TemporaryDirectory(prefix="lar-dict-lance-") as tmp:
        for label, kind, _, _ in inputs.SPEED_SHAPES:
            if kind != "varwidth":
                continue
            arrays = inputs.cached_speed_arrays(fx, label, "uniform")
            dictionary = arrow_dictionary(arrays)
            paths: dict[int, str] = {}
            layouts: set[str] = set()
            defaults: set[str] = set()
            for rows in LANCE_ROWS:
                page = arrays["pool"][:rows]
                col = pa.DictionaryArray.from_arrays(arrow_indices(page), dictionary).dictionary_decode()
                table = pa.table({"s": col})
                paths[rows] = str(Path(tmp) / f"{label}-{rows}.lance")
                defaults.add(f"{default_layout(table, Path(tmp))}@{rows}")
                writer = LanceFileWriter(paths[rows], table.schema, version="2.1")
                writer.write_batch(table)
                writer.close()
                layouts.add(lance_layout(paths[rows]))
                got = LanceFileReader(paths[rows]).read_all(batch_size=rows).to_table().column("s")
                assert got.combine_chunks().equals(col), f"{label}: Lance read back something else"
            print(f"{label}: pylance's default encoding: {', '.join(sorted(defaults))}; with {FORCE_DICTIONARY} "
                  f"(timed): {', '.join(sorted(layouts))}")
            workloads = {rows: run_experiment.workload(label, "uniform", arrays, rows) for rows in LANCE_ROWS}
            insts = {name: {rows: target.build(m, workloads[rows].params, arrays) for rows in LANCE_ROWS}
                     for name, m in (("baseline", base_mod), ("kernel", kern_mod))}
            calls = {rows: workloads[rows].queries(args.seed, args.calls + 1) for rows in LANCE_ROWS}

            def lance_read(rows: int, _: Any) -> Any:
                return LanceFileReader(paths[rows]).read_all(batch_size=rows).to_table()

            arms: list[tuple[str, Callable[[int, Any], Any]]] = [
                ("lance", lance_read),
                ("baseline", lambda rows, c: target.OPS["speed"](insts["baseline"][rows], c)),
                ("kernel", lambda rows, c: target.OPS["speed"](insts["kernel"][rows], c))]
            samples: dict[str, dict[int, list[float]]] = {a: {r: [] for r in LANCE_ROWS} for a, _ in arms}
            for rows in LANCE_ROWS:
                for _, f in arms:
                    f(rows, calls[rows][0])                          # warm-up
            for i in range(args.calls):
                for k, rows in enumerate(np.roll(LANCE_ROWS, i)):
                    rows = int(rows)
                    gc.disable()
                    try:
                        for j in arm_order(i * len(LANCE_ROWS) + k, len(arms)):
                            t0 = time.perf_counter_ns()
                            arms[j][1](rows, calls[rows][1 + i])
                            samples[arms[j][0]][rows].append(time.perf_counter_ns() - t0)
                    finally:
                        gc.enable()
            fits = {}
            for name, _ in arms:
                med = [float(np.median(samples[name][r])) for r in LANCE_ROWS]
                slope, intercept = np.polyfit(np.array(LANCE_ROWS, float), med, 1)
                fits[name] = (slope, intercept)
            print(f"{label:<12}{' / '.join(sorted(layouts))[:35]:<36}"
                  + "".join(f"{f'{s:.2f} ns + {b / 1e3:.0f} us':>22}" for s, b in fits.values())
                  + f"{fits['lance'][0] / fits['baseline'][0]:>12.2f}{fits['lance'][0] / fits['kernel'][0]:>12.2f}",
                  flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=8, help="fresh pages per workload (default 8)")
    ap.add_argument("--kernel", type=Path, default=SHIPPED, help="kernels.py to time (default: shipped)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the fresh pages (default 1)")
    ap.add_argument("--no-lance", dest="lance", action="store_false", help="skip the Lance file arm")
    args = ap.parse_args(argv)
    base_mod = load_kernel(str(SHIPPED), "anchor_baseline_kernels")
    kern_mod = load_kernel(str(args.kernel), "anchor_kernels")
    print(f"kernel {args.kernel}  numpy {np.__version__}  pyarrow {pa.__version__}  "
          f"polars {pl.__version__ if pl is not None else 'not installed'}  {args.calls} pages/workload of "
          f"{inputs.PAGE_ROWS} rows  1 thread")
    bench_workloads(args, base_mod, kern_mod)
    if args.lance:
        bench_lance(args, base_mod, kern_mod)
    return 0


if __name__ == "__main__":
    sys.exit(main())
