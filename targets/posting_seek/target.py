"""posting-seek's fixed types and the op the worker runs around each kernel call (immutable in a run).

An instance is one posting list: its sorted, unique uint32 doc ids and its sidecar (the first doc
id of every 128-entry block, as Lance stores it); ``__init__`` is untimed, as Lance's index load.
The op is one ``seek_sequence`` call: a cursor that starts on the list's first entry runs a
sequence of seeks, each target a delta from the doc the previous seek returned (the previous
result is an input of the next: WAND's data-dependent advance). ``RESET`` puts the cursor back on
the first entry. The op allocates the results, int64, filled with a poison value no result can
take, so an unwritten element fails. Workers import only this module (plus the harness), so it
imports nothing else from the project.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

BLOCK = 128                                   # entries per block of the sidecar
RESET = -1                                    # an op that resets the cursor (its result is -1)
EXHAUSTED = -1                                # the result of a seek past the last doc
POISON = np.int64(np.iinfo(np.int64).min)     # never a result: results are doc ids or -1
MAX_DOC_ID = (1 << 31) - 1

# Modules kernels.py may import (the static policy's allowlist).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "PostingSeek": {
        "__init__": ["self", "first_doc_ids", "doc_ids"],
        "seek_sequence": ["self", "ops", "out"],
    },
}


def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    first, docs = arrays["first_doc_ids"], arrays["doc_ids"]
    if first.dtype != np.uint32 or docs.dtype != np.uint32 or docs.size != int(params["length"]):
        raise ValueError("first_doc_ids and doc_ids must be uint32 and doc_ids as long as the list")
    if docs.size == 0 or first.size != -(-docs.size // BLOCK) or not np.array_equal(first, docs[::BLOCK]):
        raise ValueError("first_doc_ids must hold the first doc id of every 128-entry block of a non-empty list")
    return kernels.PostingSeek(first, docs)


def _seek(kernel: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ops = arrays["ops"]
    out = np.full(ops.size, POISON, dtype=np.int64)
    kernel.seek_sequence(ops, out)
    return {"results": out}


OPS = {"check": _seek, "speed": _seek}
