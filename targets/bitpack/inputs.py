"""bitpack inputs: the FastLanes encoder, the correctness battery and the speed workloads, all
from seeded SplitMix64.

No Python codec writes Lance's layout, so this module carries one: ``pack_chunk`` is FastLanes'
``pack!`` (rust/compression/bitpacking/src/lib.rs) written with numpy bit arrays, and
``encode_page`` is ``InlineBitpacking::bitpack_chunked`` (rust/lance-encoding/src/encodings/
physical/bitpacking.rs): chunks of 1,024 values, each one header word of the column's type T
holding its width W = the bit length of the OR of its values (statistics.rs: no frame of
reference, no zigzag, so a negative signed value takes the full width), then W*1024/T packed
words; the last chunk zero-padded to 1,024 values. As in a miniblock page each chunk starts on an
8-byte boundary; the padding words between chunks hold 0xEE bytes (no decoder may read them).

Battery (per T in 8, 16, 32, 64, each case named): every width 0..T in one page, partial last
chunks (1 and 1,023 values past a multiple of 1,024), a narrow (W = 0) partial last chunk, one
value, an empty page, a single full chunk, all values at the maximum (the W = T copy path), signed
-1 and small negatives at full width, mixed widths and sparse zero chunks; plus one fresh page per
T from the trial seed. Speed: one page of 1,048,576 values per combo, fresh words patched into it
on every call. Fixed fixtures are cached on disk by a hash of these sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.bitpack import reference
from targets.bitpack.reference import CHUNK, DTYPES
from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds

BITS = (8, 16, 32, 64)
PAD_BYTE = 0xEE
ALIGN_BYTES = 8                                   # miniblock chunks start 8-byte aligned
SPEED_VALUES = 1 << 20                            # one page: 1,048,576 values
BATTERY_PATCH_WORDS = 64

_SOURCES = (Path(__file__), Path(__file__).with_name("reference.py"),
            Path(__file__).parent.parent / "harness" / "prng.py")


# --- the encoder -------------------------------------------------------------------------------------

def bit_width(values: np.ndarray) -> int:
    """statistics.rs: bits(T) - leading_zeros(OR of the values)."""
    return int(np.bitwise_or.reduce(values.astype(np.uint64), initial=np.uint64(0))).bit_length()


def pack_chunk(values: np.ndarray, width: int, t: int) -> np.ndarray:
    """FastLanes pack of 1,024 uintT values at ``width`` bits: W*LANES words, word k of lane l at
    ``LANES * k + l``, each lane's words one LSB-first string of its T rows of W bits."""
    lanes = CHUNK // t
    v = values.astype(np.uint64)
    if v.size != CHUNK:
        raise ValueError(f"a chunk is {CHUNK} values, got {v.size}")
    if width < 64 and np.any(v >> np.uint64(width)):
        raise ValueError(f"values wider than {width} bits")
    if width == 0:
        return np.zeros(0, dtype=DTYPES[t])
    rows = v[reference.positions(t)].T                                                    # (lanes, T)
    bits = ((rows[:, :, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    packed = np.packbits(bits.reshape(lanes, t * width), axis=1, bitorder="little")      # (lanes, W*T/8)
    words = np.ascontiguousarray(packed).view(DTYPES[t]).reshape(lanes, width)
    return np.ascontiguousarray(words.T).reshape(-1)


def encode_page(values: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """A page of uintT ``values``: (its words, uintT; the word offset of every chunk's header)."""
    dtype = DTYPES[t]
    values = np.asarray(values).astype(dtype)
    per_align = ALIGN_BYTES * 8 // t
    pad_word = np.frombuffer(bytes([PAD_BYTE]) * (t // 8), dtype=dtype)[0]
    parts: list[np.ndarray] = []
    starts: list[int] = []
    offset = 0
    for c in range(-(-values.size // CHUNK)):
        chunk = np.zeros(CHUNK, dtype=dtype)
        real = values[c * CHUNK:(c + 1) * CHUNK]
        chunk[:real.size] = real
        width = bit_width(real)
        body = np.concatenate([np.array([width], dtype=dtype), pack_chunk(chunk, width, t)])
        pad = np.full((-body.size) % per_align, pad_word, dtype=dtype)
        starts.append(offset)
        parts.append(body)
        parts.append(pad)
        offset += body.size + pad.size
    words = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return words, np.array(starts, dtype=np.int64)


def packed_positions(words: np.ndarray, chunk_starts: np.ndarray, t: int) -> np.ndarray:
    """Every packed word's offset in the page (headers and padding excluded): where patches go."""
    lanes = CHUNK // t
    spans = [np.arange(s + 1, s + 1 + int(words[s]) * lanes) for s in chunk_starts.tolist()]
    return np.concatenate(spans).astype(np.int64) if spans else np.zeros(0, dtype=np.int64)


# --- values --------------------------------------------------------------------------------------------

def _below(stream: Stream, n: int, widths: np.ndarray) -> np.ndarray:
    """n uniform u64 values, value i below 2**widths[i]."""
    w = widths.astype(np.uint64)
    masks = np.where(w >= 64, np.uint64(0xFFFF_FFFF_FFFF_FFFF),
                     (np.uint64(1) << np.minimum(w, np.uint64(63))) - np.uint64(1))
    return stream.u64(n) & masks


def _chunk_widths(n: int, per_chunk: np.ndarray) -> np.ndarray:
    return np.repeat(per_chunk, CHUNK)[:n]


def make_values(kind: str, t: int, w_max: int, n: int, seed: int) -> np.ndarray:
    """``n`` uintT values of one distribution (``w_max`` <= T bits)."""
    stream = Stream(mix_seeds(seed, kind, t, w_max, n))
    chunks = -(-n // CHUNK)
    if kind == "full_width":                      # every chunk at w_max
        vals = _below(stream, n, np.full(n, w_max))
    elif kind == "mixed_widths":                  # each chunk its own width in 0..w_max
        vals = _below(stream, n, _chunk_widths(n, stream.integers(w_max + 1, chunks)))
    elif kind == "sparse_zero":                   # 90 % of chunks zero (W = 0), the rest at w_max
        wide = stream.f32(chunks) < 0.1
        vals = _below(stream, n, _chunk_widths(n, np.where(wide, w_max, 0)))
    elif kind == "geometric":                     # magnitudes 2**U(0, w_max): widths vary within chunks
        vals = _below(stream, n, stream.integers(w_max + 1, n))
    else:
        raise ValueError(f"unknown distribution {kind!r}")
    return vals.astype(DTYPES[t])


# --- the battery ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    name: str
    t: int
    values: np.ndarray                            # the original values (uintT)


def _edge_values(kind: str, t: int, seed: int) -> np.ndarray:
    dtype = DTYPES[t]
    stream = Stream(mix_seeds(seed, kind, t))
    top = (1 << t) - 1
    if kind == "every_width":                     # chunk w at exactly w bits, w = 0..T
        widths = np.arange(t + 1)
        vals = _below(stream, (t + 1) * CHUNK, _chunk_widths((t + 1) * CHUNK, widths))
        for w in range(1, t + 1):                 # the chunk's top bit set somewhere
            vals[w * CHUNK + int(stream.integers(CHUNK, 1)[0])] |= np.uint64(1 << (w - 1))
        return vals.astype(dtype)
    if kind in ("partial_last_1", "partial_last_1023"):
        extra = int(kind.rsplit("_", 1)[1])
        return make_values("mixed_widths", t, t, 3 * CHUNK + extra, mix_seeds(seed, kind))
    if kind == "narrow_partial_last":             # a W = 0 partial last chunk after wide ones
        vals = make_values("full_width", t, t, 2 * CHUNK + 300, mix_seeds(seed, kind))
        vals[2 * CHUNK:] = 0
        return vals
    if kind == "one_value":
        return np.array([top - int(stream.integers(3, 1)[0])], dtype=np.uint64).astype(dtype)
    if kind == "empty":
        return np.zeros(0, dtype=dtype)
    if kind == "single_chunk":
        return make_values("full_width", t, max(1, t // 2 + 1), CHUNK, mix_seeds(seed, kind))
    if kind == "max_values":                      # all ones: W = T, the copy path
        return np.full(2 * CHUNK + 5, top, dtype=np.uint64).astype(dtype)
    if kind == "signed_minus_one":                # -1 and small signed values as stored: full width
        small = stream.integers(200, 3 * CHUNK + 17).astype(np.int64) - 100
        small[::7] = -1
        return small.astype(np.dtype(f"<i{t // 8}")).view(dtype)
    if kind in ("mixed_widths", "sparse_zero", "geometric"):
        return make_values(kind, t, t, 20 * CHUNK + 333, mix_seeds(seed, kind))
    raise ValueError(f"unknown edge case {kind!r}")


EDGE_KINDS = ("every_width", "partial_last_1", "partial_last_1023", "narrow_partial_last", "one_value", "empty",
              "single_chunk", "max_values", "signed_minus_one", "mixed_widths", "sparse_zero", "geometric")
BATTERY_NAMES = tuple(f"{kind}/u{t}" for t in BITS for kind in EDGE_KINDS)


def battery_page(name: str, seed: int) -> Page:
    kind, label = name.split("/")
    t = int(label[1:])
    return Page(name, t, _edge_values(kind, t, seed))


def fresh_page(t: int, seed: int) -> Page:
    """A page of 0-40 chunks (any length, a partial last chunk likely) from a per-trial seed,
    mixed widths up to a random maximum in 0..T."""
    stream = Stream(mix_seeds(seed, "fresh", t))
    n = int(stream.integers(40 * CHUNK + 1, 1)[0])
    w_max = int(stream.integers(t + 1, 1)[0])
    kind = ("mixed_widths", "geometric", "sparse_zero")[int(stream.integers(3, 1)[0])]
    return Page(f"fresh/u{t}", t, make_values(kind, t, w_max, n, mix_seeds(seed, "fresh-values", t)))


def patches(words: np.ndarray, chunk_starts: np.ndarray, t: int, seed: int, count: int,
            where: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One call's patch: ``count`` distinct packed words (none when the page has none) and fresh
    values for them (any bit pattern is a valid packed word). ``where``: the page's
    ``packed_positions``, if already known."""
    if where is None:
        where = packed_positions(words, chunk_starts, t)
    stream = Stream(seed)
    if where.size == 0 or count == 0:
        return {"patch_pos": np.zeros(0, dtype=np.int64), "patch_words": np.zeros(0, dtype=DTYPES[t])}
    pos = np.unique(where[stream.integers(where.size, count)])
    return {"patch_pos": pos, "patch_words": stream.u64(pos.size).astype(DTYPES[t])}


# --- speed --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeedCombo:
    t: int
    w_max: int
    distribution: str

    @property
    def shape(self) -> str:
        return f"u{self.t}-w{self.w_max}"


SPEED_COMBOS = (SpeedCombo(8, 3, "full_width"), SpeedCombo(16, 11, "mixed_widths"),
                SpeedCombo(32, 7, "full_width"), SpeedCombo(32, 17, "full_width"),
                SpeedCombo(32, 31, "sparse_zero"), SpeedCombo(64, 52, "mixed_widths"))


def speed_values(combo: SpeedCombo, n: int = SPEED_VALUES) -> np.ndarray:
    return make_values(combo.distribution, combo.t, combo.w_max, n, mix_seeds(SPEED_SEED, combo.shape))


# --- fixtures ---------------------------------------------------------------------------------------------

def _all_fixtures() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in BATTERY_NAMES:
        page = battery_page(name, CORRECTNESS_SEED)
        words, starts = encode_page(page.values, page.t)
        out[f"battery/{name}/values"], out[f"battery/{name}/words"], out[f"battery/{name}/starts"] = page.values, words, starts
    for combo in SPEED_COMBOS:
        values = speed_values(combo)
        words, starts = encode_page(values, combo.t)
        key = f"speed/{combo.shape}/{combo.distribution}"
        out[f"{key}/values"], out[f"{key}/words"], out[f"{key}/starts"] = values, words, starts
    return out


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("bitpack", key, _all_fixtures)
