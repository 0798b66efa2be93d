"""take's oracle, written to be trusted by reading (plain numpy).

A request is row addresses (uint64, ``fragment_id << 32 | row_offset``). Lance's
``do_take_rows`` (rust/lance/src/dataset/take.rs) classifies it (``check_row_addrs``: sorted =
strictly increasing; contiguous = each address the previous + 1, all in the first address's
fragment), reads the unique addresses fragment by fragment (a fragment that does not exist, an
offset past the fragment's end and a deleted row return nothing), and puts the returned rows back
in request order, dropping the requests whose row was not returned (``filter_map``), duplicates
repeated. Then ``take_struct_array`` gathers every column (arrow ``take``).

The plan: ``uniq_addrs`` = the sorted request without repeats (``np.unique``); the groups are its runs of equal
``addr >> 32``; ``remap`` = each kept request's position among the returned addresses
(``searchsorted`` in the sorted returned addresses). The columns are the dataset's rows at
``returned_rows[remap]``; the utf8 column is rebuilt with offsets from 0.
"""

from __future__ import annotations

import numpy as np

SHIFT = np.uint64(32)
LOW = np.uint64(0xFFFF_FFFF)


def flags(addrs: np.ndarray) -> np.ndarray:
    """[sorted, contiguous] as check_row_addrs computes them (both true for 0 or 1 address)."""
    a = addrs.astype(np.uint64)
    if a.size < 2:
        return np.array([1, 1], dtype=np.uint8)
    d_sorted = bool(np.all(a[1:] > a[:-1]))
    contiguous = bool(np.all(a[1:] == a[:-1] + np.uint64(1)) and np.all((a >> SHIFT) == (a[0] >> SHIFT)))
    return np.array([d_sorted, contiguous], dtype=np.uint8)


def row_of(addrs: np.ndarray, frag_ids: np.ndarray, frag_rows: np.ndarray, deleted: np.ndarray) -> np.ndarray:
    """The dataset row of each address, or -1 where a fragment read would not return it."""
    frag = (addrs >> SHIFT).astype(np.int64)
    offset = (addrs & LOW).astype(np.int64)
    k = np.searchsorted(frag_ids.astype(np.int64), frag)
    k_ok = np.minimum(k, max(frag_ids.size - 1, 0))
    exists = (k < frag_ids.size) & (frag_ids.astype(np.int64)[k_ok] == frag) if frag_ids.size else np.zeros(addrs.size, bool)
    length = (frag_rows[k_ok + 1] - frag_rows[k_ok]) if frag_ids.size else np.zeros(addrs.size, np.int64)
    inside = exists & (offset < length)
    rows = np.where(inside, frag_rows[k_ok] + offset if frag_ids.size else 0, -1).astype(np.int64)
    live = inside.copy()
    live[inside] = deleted[rows[inside]] == 0
    return np.where(live, rows, -1)


def plan(addrs: np.ndarray, ds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The plan arrays and the dataset rows to gather, in request order (``rows``)."""
    ordered = np.sort(addrs.astype(np.uint64))
    uniq = ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if ordered.size else ordered
    frag = uniq >> SHIFT
    starts = np.flatnonzero(np.r_[True, frag[1:] != frag[:-1]]) if uniq.size else np.zeros(0, np.int64)
    bounds = np.r_[starts, uniq.size].astype(np.int64)
    uniq_rows = row_of(uniq, ds["frag_ids"], ds["frag_rows"], ds["deleted"])
    returned = uniq[uniq_rows >= 0]
    returned_rows = uniq_rows[uniq_rows >= 0]
    pos = np.searchsorted(returned, addrs.astype(np.uint64))
    found = pos < returned.size
    found[found] = returned[pos[found]] == addrs[found]
    remap = pos[found].astype(np.uint64)
    return {"flags": flags(addrs), "uniq_addrs": uniq, "frag_ids": frag[starts].astype(np.uint32),
            "frag_bounds": bounds, "remap": remap, "rows": returned_rows[remap.astype(np.int64)]}


def gather_strings(rows: np.ndarray, offsets: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The utf8 column at ``rows``: (int32 offsets [M+1] from 0, bytes)."""
    off = offsets.astype(np.int64)
    lengths = off[rows + 1] - off[rows]
    out_off = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_off[1:])
    row_of_byte = np.repeat(np.arange(rows.size), lengths)
    src = off[rows][row_of_byte] + (np.arange(out_off[-1]) - out_off[:-1][row_of_byte])
    return out_off.astype(np.int32), data[src].astype(np.uint8)


def take(addrs: np.ndarray, ds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of the op, exactly (the names of ``target.OUTPUTS``)."""
    p = plan(addrs, ds)
    rows = p.pop("rows")
    str_offsets, str_bytes = gather_strings(rows, ds["str_offsets"], ds["str_bytes"])
    return {**p, "i64": ds["i64"][rows], "vec": ds["vec"][rows].reshape(rows.size, ds["vec"].shape[1]),
            "str_offsets": str_offsets, "str_bytes": str_bytes}


def sizes(addrs: np.ndarray, ds: dict[str, np.ndarray]) -> np.ndarray:
    """[U, G, M', B]: what the op allocates before the kernel runs."""
    p = plan(addrs, ds)
    off = ds["str_offsets"].astype(np.int64)
    rows = p["rows"]
    return np.array([p["uniq_addrs"].size, p["frag_ids"].size, rows.size, int((off[rows + 1] - off[rows]).sum())],
                    dtype=np.int64)
