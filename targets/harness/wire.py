"""Framing for runner <-> worker pipes: a JSON header followed by raw array bytes.

The runner never unpickles anything a worker sends: arrays come back as bytes plus a declared
dtype (from a small allowlist) and shape, and are rebuilt as plain, read-only ndarrays.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from typing import Any

import numpy as np

MAGIC = b"LAR1"
_PREFIX = struct.Struct("<4sI")
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 29
SMALL_FRAME_BYTES = 1 << 16          # sent with one write (a query, its answer)
ALLOWED_DTYPES = frozenset(np.dtype(t).str for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float32, np.float64))


class WireError(Exception):
    """A malformed frame, a closed pipe or a missed deadline."""


class WireTimeout(WireError):
    pass


def _wait(fd: int, event: int, deadline: float | None, spin: bool = False) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise WireTimeout("deadline passed")
    poller = select.poll()
    poller.register(fd, event)
    if spin:
        # Busy-wait: halves the wake-up latency a blocking poll adds to every timed reply.
        while not poller.poll(0):
            if time.monotonic() > deadline:
                raise WireTimeout("deadline passed")
        return
    if not poller.poll(remaining * 1000.0):
        raise WireTimeout("deadline passed")


def spin_until_readable(fd: int, cpu_seconds: float) -> None:
    """Busy-poll ``fd`` until it is readable or this thread has spent ``cpu_seconds`` of CPU
    waiting (then the caller's read blocks). A blocked reader on a VM wakes ~100-200 µs after the
    write, more than a whole PQ search; a frozen (SIGSTOPped) spinner spends no CPU, so the
    budget outlasts any freeze and a thawed worker is still spinning when its request comes."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    until = time.thread_time() + cpu_seconds
    while not poller.poll(0):
        if time.thread_time() > until:
            return


def _write_all(fd: int, data: bytes | memoryview, deadline: float | None) -> None:
    if deadline is not None and os.get_blocking(fd):
        # A blocking write of more than the pipe has room for waits for the reader, deadline or
        # not: with a deadline the fd becomes (and stays) non-blocking.
        os.set_blocking(fd, False)
    view = memoryview(data).cast("B")
    while view:
        _wait(fd, select.POLLOUT, deadline)
        try:
            written = os.write(fd, view)
        except BlockingIOError:        # non-blocking fd (the runner's): full again, poll again
            continue
        except BrokenPipeError as exc:
            raise WireError("peer closed the pipe") from exc
        view = view[written:]


def _read_exact(fd: int, n: int, deadline: float | None, spin: bool = False) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        _wait(fd, select.POLLIN, deadline, spin)
        chunk = os.readv(fd, [view[got:]])
        if chunk == 0:
            raise WireError("peer closed the pipe")
        got += chunk
    return buf


def send(fd: int, message: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
         deadline: float | None = None) -> None:
    """Write one frame; with a deadline, give up (WireTimeout) when the reader stops reading.
    A small frame goes out in one write: a reader that finds half a frame would block for the
    rest, and a blocked reader wakes late (see spin_until_readable)."""
    arrays = arrays or {}
    specs: list[dict[str, Any]] = []
    payloads: list[memoryview] = []
    for name, arr in arrays.items():
        arr = np.asarray(arr, order="C")
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        specs.append({"name": name, "dtype": dtype.str, "shape": list(arr.shape)})
        payloads.append(arr.astype(dtype, copy=False).data)
    header = json.dumps({"message": message, "arrays": specs}).encode()
    frame: list[bytes | memoryview] = [_PREFIX.pack(MAGIC, len(header)) + header, *(p for p in payloads if p.nbytes)]
    if sum(memoryview(part).nbytes for part in frame) <= SMALL_FRAME_BYTES:
        _write_all(fd, b"".join(frame), deadline)
        return
    for part in frame:
        _write_all(fd, part, deadline)


def recv(fd: int, deadline: float | None = None,
         spin: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read one frame; with ``spin`` the wait for its first byte busy-polls (timed calls only)."""
    magic, length = _PREFIX.unpack(_read_exact(fd, _PREFIX.size, deadline, spin))
    if magic != MAGIC:
        raise WireError(f"bad frame magic {magic!r}")
    if length > MAX_HEADER_BYTES:
        raise WireError(f"frame header of {length} bytes is over the limit")
    try:
        header = json.loads(_read_exact(fd, length, deadline, spin))
        message, specs = header["message"], header["arrays"]
        if not isinstance(message, dict) or not isinstance(specs, list):
            raise TypeError("message must be an object and arrays a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise WireError(f"malformed frame header: {exc}") from exc
    parsed = [_parse_spec(spec) for spec in specs]
    sizes = [dtype.itemsize * math.prod(shape) for _, dtype, shape in parsed]
    if sum(sizes) > MAX_PAYLOAD_BYTES:
        raise WireError("frame payload is over the limit")
    # One read for every payload, then read-only views of it (backed by bytes).
    data = bytes(_read_exact(fd, sum(sizes), deadline, spin)) if sum(sizes) else b""
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for (name, dtype, shape), size in zip(parsed, sizes):
        arrays[name] = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
        offset += size
    return message, arrays


def _parse_spec(spec: object) -> tuple[str, np.dtype, tuple[int, ...]]:
    try:
        name, dtype_str, shape = spec["name"], spec["dtype"], spec["shape"]  # type: ignore[index]
    except (TypeError, KeyError) as exc:
        raise WireError(f"malformed array spec {spec!r}") from exc
    if not isinstance(name, str) or dtype_str not in ALLOWED_DTYPES:
        raise WireError(f"array {name!r}: dtype {dtype_str!r} is not allowed")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)):
        raise WireError(f"array {name!r}: bad shape {shape!r}")
    return name, np.dtype(dtype_str), tuple(shape)
