"""bitnet.cpp's LUT tilings: one (BM, BK, bm) per weight shape (M, K), and its `kernel_config.ini`.

bitnet.cpp generates a TL1 (ARM) or TL2 (x86) kernel per (M, K) at build time
(`utils/codegen_tl{1,2}.py`) and writes the tilings it used to `include/kernel_config.ini`;
the converter lays each weight out for its tiling. A TL GGUF therefore only runs on a build
generated with the same config. The ini, as codegen writes it (Python's ConfigParser):

    [Kernels_0]         one section per shape, numbered in the order the shapes were given
    m = 2560            rows (out_features)
    k = 2560            columns (in_features)
    bm = 128            BM: rows per tile
    bk = 96             BK: columns per tile
    bmm = 32            bm: rows per compute block
    <blank line>

Rules (codegen asserts, plus what the converter's reshapes and the kernels need):

    TL1   bm in {32, 64};  M % BM == 0;  BM % bm == 0;  K % BK == 0;  BK % (256 / bm) == 0;
          K % 16 == 0 (the activation LUT is built 16 columns at a time)
    TL2   bm == 32;  M % BM == 0;  BM % 32 == 0;  BK % 24 == 0;  BK <= K;
          three_k = K // BK * BK,  two_k = K - three_k:  two_k % 32 == 0  and  two_k <= 256
          (the converter pads the codes up to F = ggml's size formula, which only covers a
          two-column part of up to 256);  K >= 256 (below it C and Python round F apart)

`choose_tiling` picks, deterministically: the peer's preset for a shape it ships one for
(`preset_kernels/*/kernel_config_tl{1,2}.ini`), else the first valid candidate in this order
- bm: 32, then 64 (TL1 only);
- BK: TL1 64, 128, then the other valid BK nearest 64 (ties to the smaller);
      TL2 96, 192, then the other valid BK nearest 96 (ties to the smaller);
- BM: 128, 256, 320, 160, then the other multiple of bm dividing M nearest 128 (ties smaller).
BK is chosen first, then BM, then bm. This reproduces the tiny-a configs (BM 128, BK 64/96,
bm 32) and gives BM 128 / BK 64 (TL1) or 96 (TL2) / bm 32 for all four 2B4T shapes.
"""
from __future__ import annotations

import configparser
import io
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import FormatError, ShapeError, UsageError

KINDS = ("tl1", "tl2")
TL2_BLOCK_ROWS = 32  # bm: TL2's compute block is always 32 rows
TL2_MAX_TWO_K = 256
TL2_MIN_K = 256
TL1_LUT_COLUMNS = 16


@dataclass(frozen=True)
class Tiling:
    """BM rows x BK columns per tile, bm rows per compute block (the ini's bm, bk, bmm)."""

    BM: int
    BK: int
    bm: int

    def __str__(self) -> str:
        return f"BM={self.BM}, BK={self.BK}, bm={self.bm}"


class KernelConfig(Mapping):
    """(M, K) -> Tiling, in the order the ini lists them (the order `write_kernel_config` keeps)."""

    def __init__(self, entries: Mapping[tuple[int, int], Tiling] | Iterable[tuple[tuple[int, int], Tiling]] = ()):
        items = entries.items() if isinstance(entries, Mapping) else entries
        self._entries: dict[tuple[int, int], Tiling] = {}
        for (m, k), tiling in items:
            self._entries[(int(m), int(k))] = tiling

    def __getitem__(self, shape: tuple[int, int]) -> Tiling:
        return self._entries[tuple(shape)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"KernelConfig({self._entries!r})"

    def tiling_for(self, shape: tuple[int, int], tensor: str | None = None) -> Tiling:
        """The tiling of `shape`; ShapeError when the config has no section for it."""
        m, k = shape
        if (m, k) not in self._entries:
            known = ", ".join(f"{a}x{b}" for a, b in self._entries) or "none"
            raise ShapeError(f"kernel config has no tiling for M={m}, K={k} (has: {known})", tensor=tensor)
        return self._entries[(m, k)]



# --- rules -----------------------------------------------------------------------------------


def _kind(kind: str) -> str:
    key = kind.strip().lower()
    if key not in KINDS:
        raise UsageError(f"kernel kind must be 'tl1' or 'tl2', got {kind!r}")
    return key


def tl2_split(k: int, bk: int) -> tuple[int, int]:
    """(three_k, two_k): the columns TL2 packs as triplets and the remainder packed as pairs."""
    three_k = k // bk * bk
    return three_k, k - three_k


def tiling_violation(kind: str, shape: tuple[int, int], tiling: Tiling) -> str | None:
    """The first rule `tiling` breaks for `shape` ("TL2 needs M % BM == 0: M=640, BM=384"), or None."""
    kind = _kind(kind)
    m, k = shape
    BM, BK, bm = tiling.BM, tiling.BK, tiling.bm
    if min(BM, BK, bm) < 1:
        return f"{kind.upper()} needs positive BM, BK and bm: {tiling}"
    if kind == "tl1":
        checks = (
            (bm in (32, 64), f"TL1 needs bm in {{32, 64}}: bm={bm}"),
            (BM % bm == 0, f"TL1 needs BM % bm == 0: BM={BM}, bm={bm}"),
            (m % BM == 0, f"TL1 needs M % BM == 0: M={m}, BM={BM}"),
            (BK % (256 // bm) == 0, f"TL1 needs BK % (256 / bm) == 0: BK={BK}, bm={bm}"),
            (k % BK == 0, f"TL1 needs K % BK == 0: K={k}, BK={BK}"),
            (k % TL1_LUT_COLUMNS == 0, f"TL1 needs K % 16 == 0 (LUT built 16 columns at a time): K={k}"),
        )
    else:
        three_k, two_k = tl2_split(k, BK)
        checks = (
            (bm == TL2_BLOCK_ROWS, f"TL2 needs bm == 32: bm={bm}"),
            (BM % TL2_BLOCK_ROWS == 0, f"TL2 needs BM % 32 == 0: BM={BM}"),
            (m % BM == 0, f"TL2 needs M % BM == 0: M={m}, BM={BM}"),
            (BK % 24 == 0, f"TL2 needs BK % 24 == 0: BK={BK}"),
            (k >= TL2_MIN_K, f"TL2 needs K >= 256 (size formula (K-256)*M/3*5/8): K={k}"),
            (BK <= k, f"TL2 needs BK <= K: K={k}, BK={BK}"),
            (two_k % 32 == 0, f"TL2 needs (K - K // BK * BK) % 32 == 0: K={k}, BK={BK}, two_k={two_k}"),
            (two_k <= TL2_MAX_TWO_K, f"TL2 needs K % BK <= 256: K={k}, BK={BK}, two_k={two_k}"),
        )
    for ok, message in checks:
        if not ok:
            return message
    return None


def check_tiling(kind: str, shape: tuple[int, int], tiling: Tiling, tensor: str | None = None) -> None:
    """ShapeError naming the shape, the tiling and the rule when `tiling` cannot lay out `shape`."""
    problem = tiling_violation(kind, shape, tiling)
    if problem:
        raise ShapeError(f"cannot tile shape {list(shape)} with {tiling}: {problem}", tensor=tensor)


def resolve_tiling(
    kind: str, shape: tuple[int, int], tiling: Tiling | Mapping | None = None, tensor: str | None = None
) -> Tiling:
    """The checked tiling for `shape`: `tiling` itself, its entry when it is a KernelConfig, or
    `choose_tiling` when it is None."""
    m, k = shape
    if tiling is None:
        return choose_tiling(kind, m, k, tensor=tensor)
    if isinstance(tiling, KernelConfig):
        tiling = tiling.tiling_for((m, k), tensor=tensor)
    elif isinstance(tiling, Mapping):
        tiling = KernelConfig(tiling).tiling_for((m, k), tensor=tensor)
    check_tiling(kind, (m, k), tiling, tensor=tensor)
    return tiling


def _shape_violation(kind: str, m: int, k: int) -> str | None:
    """A rule that no tiling of (M, K) can meet (checked before searching)."""
    if m < 1 or k < 1:
        return f"{kind.upper()} needs a non-empty shape"
    if m % 32:
        return f"{kind.upper()} needs M % 32 == 0 (BM is a multiple of bm >= 32): M={m}"
    if kind == "tl1" and k % TL1_LUT_COLUMNS:
        return f"TL1 needs K % 16 == 0 (LUT built 16 columns at a time): K={k}"
    if kind == "tl2" and k < TL2_MIN_K:
        return f"TL2 needs K >= 256 (size formula (K-256)*M/3*5/8): K={k}"
    if kind == "tl2" and k % 8:
        return f"TL2 needs K % 8 == 0 (K = three_k + two_k, three_k % 24 == 0, two_k % 32 == 0): K={k}"
    return None


# --- choosing --------------------------------------------------------------------------------

# The peer's shipped presets (preset_kernels/<model>/kernel_config_tl{1,2}.ini at microsoft/BitNet
# 404980e), (M, K) -> (BM, BK, bm). Left out: bitnet_b1_58-large TL2 (4096, 1536) 256/96/64, which
# breaks codegen_tl2's own `bm == 32` assert and which the converter cannot lay out.
PRESETS: dict[str, dict[tuple[int, int], tuple[int, int, int]]] = {
    "tl1": {
        (1536, 4096): (256, 128, 32), (1536, 1536): (128, 64, 64), (4096, 1536): (256, 128, 32),
        (3200, 8640): (160, 64, 32), (3200, 3200): (320, 128, 64), (8640, 3200): (320, 64, 32),
        (14336, 4096): (256, 128, 64), (4096, 14336): (256, 128, 32),
        (1024, 4096): (128, 64, 64), (4096, 4096): (128, 64, 32),
    },
    "tl2": {
        (1536, 4096): (256, 96, 32), (1536, 1536): (128, 192, 32),
        (3200, 8640): (160, 96, 32), (3200, 3200): (320, 96, 32), (8640, 3200): (320, 96, 32),
        (14336, 4096): (256, 96, 32), (4096, 14336): (128, 96, 32),
        (1024, 4096): (256, 96, 32), (4096, 4096): (128, 96, 32),
    },
}
_BM_FIRST = (128, 256, 320, 160)
_BK_FIRST = {"tl1": (64, 128), "tl2": (96, 192)}
_BK_CENTRE = {"tl1": 64, "tl2": 96}
_BM_CENTRE = 128


def _ordered(first: Iterable[int], candidates: Iterable[int], centre: int) -> list[int]:
    """`first` (those that are candidates), then the rest by distance from `centre`, smaller first."""
    pool = set(candidates)
    head = [c for c in first if c in pool]
    tail = sorted(pool - set(head), key=lambda c: (abs(c - centre), c))
    return head + tail


def _candidates(kind: str, m: int, k: int) -> Iterator[Tiling]:
    """Every valid tiling of (M, K), most preferred first (the preset, then BK, BM, bm order)."""
    preset = PRESETS[kind].get((m, k))
    if preset and tiling_violation(kind, (m, k), Tiling(*preset)) is None:
        yield Tiling(*preset)
    bms = (32, 64) if kind == "tl1" else (TL2_BLOCK_ROWS,)
    bk_step = 4 if kind == "tl1" else 24
    bks = _ordered(_BK_FIRST[kind], range(bk_step, k + 1, bk_step), _BK_CENTRE[kind])
    BMs = _ordered(_BM_FIRST, (b for b in range(32, m + 1, 32) if m % b == 0), _BM_CENTRE)
    for bk in bks:
        for BM in BMs:
            for bm in bms:
                tiling = Tiling(BM, bk, bm)
                if tiling_violation(kind, (m, k), tiling) is None and tuple(preset or ()) != (BM, bk, bm):
                    yield tiling


def valid_tilings(kind: str, m: int, k: int) -> list[Tiling]:
    """Every tiling the rules allow for (M, K), in `choose_tiling`'s order of preference."""
    kind = _kind(kind)
    return [] if _shape_violation(kind, m, k) else list(_candidates(kind, m, k))


def choose_tiling(kind: str, m: int, k: int, tensor: str | None = None) -> Tiling:
    """The preferred valid tiling of (M, K) (see the module docstring); ShapeError if none exists."""
    kind = _kind(kind)
    problem = _shape_violation(kind, m, k)
    if problem is None:
        for tiling in _candidates(kind, m, k):
            return tiling
        problem = f"no (BM, BK, bm) meets the {kind.upper()} rules"
    raise ShapeError(f"no {kind.upper()} tiling for shape {[m, k]}: {problem}", tensor=tensor)


def choose_config(kind: str, shapes: Iterable[tuple[int, int]]) -> KernelConfig:
    """A tiling for each distinct (M, K) in `shapes`, in first-seen order."""
    return KernelConfig((tuple(s), choose_tiling(kind, *s)) for s in dict.fromkeys(tuple(s) for s in shapes))


# --- the ini file ----------------------------------------------------------------------------

_KEYS = ("m", "k", "bm", "bk", "bmm")
MAX_INI_BYTES = 1 << 20  # a few hundred bytes per tiling


def read_kernel_config(path: str | os.PathLike, kind: str | None = None) -> KernelConfig:
    """Parse bitnet.cpp's kernel_config.ini. Keys are case-insensitive (as ConfigParser reads them);
    section names are free. With `kind`, every tiling is also checked against that kernel's rules."""
    from ..containers.sniff import require_regular

    if require_regular(path) > MAX_INI_BYTES:
        raise FormatError(f"{Path(path).stat().st_size} bytes is too large for a kernel config "
                          f"(at most {MAX_INI_BYTES})", path=path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read the kernel config ({exc.__class__.__name__}: {exc})", path=path) from None
    return parse_kernel_config(text, source=path, kind=kind)


def parse_kernel_config(text: str, source: object = "<string>", kind: str | None = None) -> KernelConfig:
    """`read_kernel_config` for ini text already in memory (e.g. our GGUF metadata key)."""
    parser = configparser.ConfigParser(interpolation=None)  # a '%' is a character, not a reference
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise FormatError(f"not a kernel_config ini: {str(exc).splitlines()[0]}", path=source) from None
    entries: dict[tuple[int, int], Tiling] = {}
    sections: dict[tuple[int, int], str] = {}
    for section in parser.sections():
        m, k, BM, BK, bm = (_int_key(parser, source, section, key) for key in _KEYS)
        if (m, k) in entries:
            raise FormatError(f"sections [{sections[(m, k)]}] and [{section}] both tile M={m}, K={k}", path=source)
        entries[(m, k)], sections[(m, k)] = Tiling(BM, BK, bm), section
        if kind is not None:
            problem = tiling_violation(kind, (m, k), entries[(m, k)])
            if problem:
                raise ShapeError(f"section [{section}]: {problem}", path=source)
    return KernelConfig(entries)


def _int_key(parser: configparser.ConfigParser, path: object, section: str, key: str) -> int:
    if not parser.has_option(section, key):
        raise FormatError(f"section [{section}] has no key {key!r}", path=path)
    raw = parser.get(section, key)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise FormatError(f"section [{section}] key {key!r} must be a positive integer, got {raw!r}", path=path)
    return value


def render_kernel_config(config: Mapping[tuple[int, int], Tiling]) -> str:
    """The ini text, byte for byte as codegen_tl{1,2}.py writes it (ConfigParser.write)."""
    lines = []
    for i, ((m, k), t) in enumerate(config.items()):
        lines.append(f"[Kernels_{i}]\nm = {m}\nk = {k}\nbm = {t.BM}\nbk = {t.BK}\nbmm = {t.bm}\n\n")
    return "".join(lines)


def write_kernel_config(config: Mapping[tuple[int, int], Tiling], path_or_stream: str | os.PathLike | IO) -> None:
    """Write `config` as kernel_config.ini to a path, a text stream or a binary stream."""
    text = render_kernel_config(config)
    if isinstance(path_or_stream, (str, os.PathLike)):
        Path(path_or_stream).write_bytes(text.encode("ascii"))
    elif isinstance(path_or_stream, (io.RawIOBase, io.BufferedIOBase)):
        path_or_stream.write(text.encode("ascii"))
    else:
        path_or_stream.write(text)


def sibling_path(gguf_path: Path) -> Path:
    """`model.gguf` -> `model.kernel_config.ini`: where bitnet.cpp's converter and ours put the
    TL1/TL2 tilings of a file, and where every command looks for them."""
    gguf_path = Path(gguf_path)
    return gguf_path.with_name(gguf_path.name.removesuffix(".gguf") + ".kernel_config.ini")
