"""Tests for targets/harness/wire.py over real os.pipe() pairs."""

from __future__ import annotations

import json
import os
import struct
import threading
import time

import numpy as np
import pytest

from targets.harness import pages, wire
from targets.harness.wire import MAGIC, MAX_HEADER_BYTES, WireError, WireTimeout


@pytest.fixture
def pipe():
    r, w = os.pipe()
    fds = {"r": r, "w": w}
    yield fds
    for fd in fds.values():
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def close(fds, end):
    os.close(fds[end])
    fds[end] = None


def send_in_thread(fd, *args, **kwargs):
    errors = []

    def run():
        try:
            wire.send(fd, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the caller
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def write_raw_in_thread(fd, data):
    def run():
        try:
            os.write(fd, data) if len(data) < 60_000 else _write_all(fd, data)
        except OSError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def frame(header: dict | bytes, magic=MAGIC, length=None) -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<4sI", magic, len(body) if length is None else length) + body


def roundtrip(fds, message, arrays, deadline=None, spin=False):
    t, errors = send_in_thread(fds["w"], message, arrays)
    try:
        got = wire.recv(fds["r"], deadline=deadline, spin=spin)
    finally:
        t.join(10)
    assert not errors, errors
    return got


ALL_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
              np.float32, np.float64]


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64))
    if dtype == np.bool_:
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True).reshape(shape)
    vals = rng.standard_normal(n).astype(dtype)
    if n >= 4:
        vals[:4] = [np.nan, np.inf, -0.0, np.finfo(dtype).tiny]
    return vals.reshape(shape)


# --- round trips ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 0, 4),
                                   (2, 3, 1, 2), (1, 1, 1, 1, 1, 1, 1, 1)])
def test_round_trip_dtypes_and_shapes(pipe, dtype, shape):
    arr = sample(dtype, shape)
    msg, arrays = roundtrip(pipe, {"op": "check", "n": 3}, {"a": arr})
    assert msg == {"op": "check", "n": 3}
    got = arrays["a"]
    assert type(got) is np.ndarray
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    assert got.tobytes() == arr.tobytes()               # bit-exact, NaN payloads and -0.0 included


def test_round_trip_several_arrays_and_message(pipe):
    arrays = {"table": sample(np.float32, (16, 256)), "ids": np.arange(10, dtype=np.int64),
              "empty": np.zeros((0, 3), dtype=np.uint8), "one": np.array([2.5])}
    message = {"nested": {"list": [1, 2.5, None, "x"], "flag": True}, "unicode": "é"}
    msg, got = roundtrip(pipe, message, arrays)
    assert msg == message
    assert list(got) == list(arrays)
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
        assert got[k].dtype == arrays[k].dtype


def test_no_arrays(pipe):
    wire.send(pipe["w"], {"hello": 1})
    assert wire.recv(pipe["r"]) == ({"hello": 1}, {})
    wire.send(pipe["w"], {}, {})
    assert wire.recv(pipe["r"]) == ({}, {})


def test_arrays_come_back_read_only(pipe):
    _, got = roundtrip(pipe, {}, {"a": np.arange(5.0), "z": np.array(1)})
    for arr in got.values():
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[...] = 0


def test_received_arrays_cannot_be_made_writable_and_immutable_keeps_them(pipe):
    _, got = roundtrip(pipe, {}, {"a": np.arange(5.0)})
    with pytest.raises(ValueError, match="WRITEABLE"):
        got["a"].flags.writeable = True                 # backed by bytes: what a kernel would try
    assert pages.immutable(got["a"]) is got["a"]        # no copy needed
    mine = np.arange(6, dtype=np.int32).reshape(2, 3)
    flagged = mine.view()
    flagged.flags.writeable = False
    flagged.flags.writeable = True                      # a flag alone does not protect memory
    frozen = pages.immutable(mine)
    assert frozen is not mine and np.array_equal(frozen, mine) and frozen.shape == (2, 3)
    with pytest.raises(ValueError, match="WRITEABLE"):
        frozen.flags.writeable = True


def test_non_contiguous_and_fortran_inputs(pipe):
    base = np.arange(60, dtype=np.int32).reshape(6, 10)
    arrays = {"strided": base[::2, 1::3], "fortran": np.asfortranarray(base), "transposed": base.T}
    _, got = roundtrip(pipe, {}, arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].flags.c_contiguous


@pytest.mark.parametrize("dtype", [">f8", ">i4", ">u2", ">f4"])
def test_big_endian_input_arrives_little_endian_with_same_values(pipe, dtype):
    arr = np.arange(-3, 9).astype(dtype)
    _, got = roundtrip(pipe, {}, {"a": arr})
    assert got["a"].dtype == np.dtype(dtype).newbyteorder("<")
    np.testing.assert_array_equal(got["a"], arr)


def test_large_payload_with_writer_thread(pipe):
    arr = sample(np.float64, (1000, 1000), seed=3)                   # 8 MB, far over a pipe buffer
    codes = sample(np.uint8, (300_000,), seed=4)
    _, got = roundtrip(pipe, {"big": True}, {"a": arr, "codes": codes}, deadline=time.monotonic() + 30)
    assert got["a"].tobytes() == arr.tobytes()
    np.testing.assert_array_equal(got["codes"], codes)


def test_several_frames_in_sequence(pipe):
    frames = [({"i": i}, {"x": np.full(i, i, dtype=np.int16)}) for i in range(5)]
    for m, a in frames:
        wire.send(pipe["w"], m, a)
    for m, a in frames:
        gm, ga = wire.recv(pipe["r"], deadline=time.monotonic() + 5)
        assert gm == m
        np.testing.assert_array_equal(ga["x"], a["x"])


def test_spin_receive_works(pipe):
    t, errors = send_in_thread(pipe["w"], {"spin": 1}, {"a": np.arange(100_000, dtype=np.int64)})
    msg, arrays = wire.recv(pipe["r"], deadline=time.monotonic() + 10, spin=True)
    t.join(10)
    assert not errors
    assert msg == {"spin": 1}
    np.testing.assert_array_equal(arrays["a"], np.arange(100_000))


def test_spin_receive_waits_for_late_sender(pipe):
    def late():
        time.sleep(0.05)
        wire.send(pipe["w"], {"late": True})
    t = threading.Thread(target=late, daemon=True)
    t.start()
    assert wire.recv(pipe["r"], deadline=time.monotonic() + 5, spin=True) == ({"late": True}, {})
    t.join(5)


def test_send_with_deadline(pipe):
    wire.send(pipe["w"], {"d": 1}, {"a": np.ones(3)}, deadline=time.monotonic() + 5)
    msg, arrays = wire.recv(pipe["r"], deadline=time.monotonic() + 5)
    assert msg == {"d": 1}
    np.testing.assert_array_equal(arrays["a"], np.ones(3))


def test_zero_d_array_value_survives(pipe):
    _, got = roundtrip(pipe, {}, {"s": np.array(-7.25)})
    assert got["s"].shape == () and float(got["s"]) == -7.25


def test_send_deadline_when_reader_never_reads(pipe):
    # The pipe buffer fills and nobody drains it: the sender must give up by its deadline, not hang.
    t, errors = send_in_thread(pipe["w"], {}, {"a": np.zeros(1 << 21, dtype=np.uint8)},
                               deadline=time.monotonic() + 0.2)
    t.join(1.0)
    finished_in_time = not t.is_alive()
    close(pipe, "r")                   # unblocks a writer stuck in os.write (EPIPE / partial write)
    t.join(5.0)
    assert not t.is_alive()
    assert finished_in_time, "send blocked past its deadline"
    assert len(errors) == 1 and isinstance(errors[0], WireTimeout)


# --- malformed frames -------------------------------------------------------------------------------

def test_bad_magic(pipe):
    os.write(pipe["w"], frame({"message": {}, "arrays": []}, magic=b"LAR2"))
    with pytest.raises(WireError, match="magic"):
        wire.recv(pipe["r"])


def test_garbage_bytes(pipe):
    os.write(pipe["w"], b"\x00" * 64)
    with pytest.raises(WireError):
        wire.recv(pipe["r"])


def test_header_over_limit(pipe):
    os.write(pipe["w"], frame(b"{}", length=MAX_HEADER_BYTES + 1))
    with pytest.raises(WireError, match="limit"):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


def test_header_over_limit_really_sent(pipe):
    # A genuinely oversized header (message padded past 1 MiB), written by a thread.
    t, errors = send_in_thread(pipe["w"], {"pad": "x" * (MAX_HEADER_BYTES + 10)})
    with pytest.raises(WireError):
        wire.recv(pipe["r"], deadline=time.monotonic() + 5)
    close(pipe, "r")          # unblocks the writer
    t.join(5)


@pytest.mark.parametrize("body", [
    b"not json",
    b"[1, 2]",
    b'{"message": {}}',
    b'{"arrays": []}',
    b'{"message": [], "arrays": []}',
    b'{"message": {}, "arrays": {}}',
    b'{"message": {}, "arrays": [5]}',
    b'{"message": {}, "arrays": [{"name": "a", "dtype": "<f8"}]}',
    b"\xff\xfe",
])
def test_malformed_header(pipe, body):
    os.write(pipe["w"], frame(body))
    with pytest.raises(WireError):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


@pytest.mark.parametrize("dtype", ["|O", ">f8", ">i4", "<c16", "<c8", "<f2", "<M8[ns]", "|S4", "<U3", "|V8",
                                   "float64", "f8", "<f16", 8, None])
def test_disallowed_dtype_in_header(pipe, dtype):
    header = {"message": {}, "arrays": [{"name": "a", "dtype": dtype, "shape": [1]}]}
    write_raw_in_thread(pipe["w"], frame(header) + b"\x00" * 64).join(5)
    with pytest.raises(WireError, match="dtype"):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


def test_complex_array_sent_is_rejected_on_receive(pipe):
    wire.send(pipe["w"], {}, {"c": np.array([1 + 2j, 3 - 4j])})
    with pytest.raises(WireError, match="dtype"):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


@pytest.mark.parametrize("shape", [[-1], [2, -3], [True], [1.0], ["3"], [None], 3, "3", None, {"0": 1},
                                   [1 << 40], [1] * 9])
def test_bad_shape(pipe, shape):
    header = {"message": {}, "arrays": [{"name": "a", "dtype": "<f4", "shape": shape}]}
    write_raw_in_thread(pipe["w"], frame(header) + b"\x00" * 64).join(5)
    with pytest.raises(WireError, match="shape"):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


def test_payload_over_limit_rejected_before_reading(pipe):
    header = {"message": {}, "arrays": [{"name": "a", "dtype": "<f8", "shape": [1 << 27]}]}   # 1 GiB
    os.write(pipe["w"], frame(header))
    with pytest.raises(WireError, match="limit"):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


def test_payload_over_limit_across_arrays(pipe):
    specs = [{"name": f"a{i}", "dtype": "|u1", "shape": [1 << 28]} for i in range(3)]          # 3 x 256 MiB
    os.write(pipe["w"], frame({"message": {}, "arrays": specs}))
    close(pipe, "w")
    with pytest.raises(WireError):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


def test_bad_array_name(pipe):
    header = {"message": {}, "arrays": [{"name": 5, "dtype": "<f4", "shape": [1]}]}
    os.write(pipe["w"], frame(header) + b"\x00" * 4)
    with pytest.raises(WireError):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


# --- closed pipes and deadlines ---------------------------------------------------------------------

def test_closed_pipe_before_any_data(pipe):
    close(pipe, "w")
    with pytest.raises(WireError, match="closed"):
        wire.recv(pipe["r"])
    with pytest.raises(WireError, match="closed"):
        wire.recv(pipe["r"], deadline=time.monotonic() + 2)


@pytest.mark.parametrize("cut", [3, 8, 20, None])
def test_closed_pipe_mid_frame(pipe, cut):
    wire.send(pipe["w"], {"a": 1}, {"x": np.arange(100, dtype=np.int64)})
    data = os.read(pipe["r"], 1 << 16)
    r2, w2 = os.pipe()
    try:
        os.write(w2, data[:cut] if cut is not None else data[:-1])
        os.close(w2)
        w2 = None
        with pytest.raises(WireError, match="closed"):
            wire.recv(r2, deadline=time.monotonic() + 2)
    finally:
        os.close(r2)
        if w2 is not None:
            os.close(w2)


def test_send_to_closed_reader(pipe):
    close(pipe, "r")
    with pytest.raises(WireError):
        wire.send(pipe["w"], {"x": 1}, {"a": np.ones(10)})
    with pytest.raises(WireError):
        wire.send(pipe["w"], {"x": 1}, deadline=time.monotonic() + 2)


@pytest.mark.parametrize("spin", [False, True])
def test_deadline_with_no_data_times_out(pipe, spin):
    start = time.monotonic()
    with pytest.raises(WireTimeout):
        wire.recv(pipe["r"], deadline=start + 0.1, spin=spin)
    assert time.monotonic() - start < 5          # returned at all (a hang would be the bug)


@pytest.mark.parametrize("spin", [False, True])
def test_deadline_already_passed(pipe, spin):
    wire.send(pipe["w"], {"x": 1})
    with pytest.raises(WireTimeout):
        wire.recv(pipe["r"], deadline=time.monotonic() - 1.0, spin=spin)


def test_deadline_mid_frame(pipe):
    # Prefix arrives but the header never does.
    os.write(pipe["w"], struct.pack("<4sI", MAGIC, 100) + b'{"mess')
    with pytest.raises(WireTimeout):
        wire.recv(pipe["r"], deadline=time.monotonic() + 0.1)


def test_timeout_is_a_wire_error():
    assert issubclass(WireTimeout, WireError)


def test_digest_buffers_is_a_keyed_sum_per_buffer_and_sees_every_byte():
    rng = np.random.default_rng(0)
    key = np.array([0x1234_5678_9ABC, 0xDEAD_BEEF_0001], dtype=np.uint64)
    low = np.uint64(0xFFFF_FFFF)

    def keyed_sum(words: np.ndarray, k1: np.uint64, k2: np.uint64) -> int:
        i = np.arange(words.size, dtype=np.uint64)
        return int(((words.astype(np.uint64) ^ k1) * ((k2 | np.uint64(1)) + 2 * i)).sum()) & 0xFFFF_FFFF

    whole = rng.integers(0, 1 << 16, 3000).astype(np.uint16)          # 6000 bytes: whole words
    ragged = rng.integers(0, 256, 4099).astype(np.uint8)               # a 3-byte tail
    got = pages.digest_buffers([whole, ragged], key)
    k1 = (key[0] + np.uint64(0x9E37_79B9)) & low
    k2 = (key[1] ^ np.uint64(0x85EB_CA6B)) & low
    assert int(got[0]) == keyed_sum(whole.view(np.uint32), k1, k2)
    k1 = (key[0] + np.uint64(0x9E37_79B9) * np.uint64(2)) & low
    k2 = (key[1] ^ np.uint64(0x85EB_CA6B) * np.uint64(2)) & low
    tail = np.zeros(4, np.uint8)
    tail[:3] = ragged[4096:]
    assert int(got[1]) == (keyed_sum(ragged[:4096].view(np.uint32), k1, k2) + keyed_sum(tail.view(np.uint32), k2, k1)) \
        & 0xFFFF_FFFF
    for buf in (whole, ragged):
        for pos in [*rng.integers(0, buf.size, 10), buf.size - 1]:     # the tail's last byte too
            changed = buf.copy()
            changed[pos] ^= 1
            assert not np.array_equal(pages.digest_buffers([changed], key), pages.digest_buffers([buf], key))

