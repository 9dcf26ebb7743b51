"""TL1 / TL2 against bitnet.cpp's own output (tiny-a), the reference notes' loop nests, and
round trips over every valid tiling; kernel_config.ini reading, writing and tiling choice."""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet_pack.errors import FormatError, NotTernary, ShapeError
from bitnet_pack.formats.dtypes import bf16_to_f32
from bitnet_pack.formats.ggml_types import TypeTable, tl1_nbytes, tl2_nbytes
from bitnet_pack.formats.kernel_config import (
    KernelConfig,
    Tiling,
    check_tiling,
    choose_config,
    choose_tiling,
    read_kernel_config,
    render_kernel_config,
    valid_tilings,
    write_kernel_config,
)
from bitnet_pack.formats.layouts.tl1 import TL1
from bitnet_pack.formats.layouts.tl2 import TL2
from bitnet_pack.formats.ternary import TernaryWeight, ternarize

LAYOUTS = {"tl1": TL1(), "tl2": TL2()}
TYPE_IDS = {"tl1": 38, "tl2": 39}
SIZES = {"tl1": tl1_nbytes, "tl2": tl2_nbytes}
HF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TINY_A_SHAPES = [(256, 256), (128, 256), (512, 256), (256, 512)]
SHAPES_2B4T = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]


# --- reading the peer's files (minimal, independent of the library's containers) ---------------


def read_bf16_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    (header_len,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16", name
        start, end = info["data_offsets"]
        bits = np.frombuffer(raw, np.uint16, (end - start) // 2, base + start).reshape(info["shape"])
        tensors[name] = bf16_to_f32(bits)
    return tensors


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_tensors(path: Path) -> dict[str, tuple[list[int], int, np.ndarray]]:
    """name -> (ne, type id, bytes from the tensor's offset to the next tensor's offset)."""
    raw = path.read_bytes()
    pos = 4
    assert raw[:4] == b"GGUF"

    def take(fmt: str):
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, raw, pos)
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("Q")
        pos += n
        return raw[pos - n : pos].decode()

    def value(kind: int):
        if kind == 8:
            return string()
        if kind == 9:
            inner, count = take("I"), take("Q")
            return [value(inner) for _ in range(count)]
        return take(_SCALARS[kind])

    take("I")
    n_tensors, n_kv = take("Q"), take("Q")
    kv = {}
    for _ in range(n_kv):
        key = string()
        kv[key] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        ne = [take("Q") for _ in range(take("I"))]
        infos.append((name, ne, take("I"), take("Q")))
    align = kv.get("general.alignment", 32)
    data = -(-pos // align) * align
    ends = [info[3] for info in infos[1:]] + [len(raw) - data]
    return {name: (ne, t, np.frombuffer(raw, np.uint8, end - off, data + off)) for (name, ne, t, off), end in zip(infos, ends, strict=True)}


@pytest.fixture(scope="module")
def masters(tiny_a: Path) -> dict[str, np.ndarray]:
    return read_bf16_safetensors(tiny_a / "tiny-a-bf16" / "model.safetensors")


def peer_tensors(tiny_a: Path, kind: str):
    """(gguf name, ternarized master, peer bytes of exactly nbytes) for every TL tensor of the file."""
    tensors = read_gguf_tensors(tiny_a / f"tiny-a-{kind}.gguf")
    masters = read_bf16_safetensors(tiny_a / "tiny-a-bf16" / "model.safetensors")
    found = []
    for name, (ne, type_id, blob) in tensors.items():
        if type_id != TYPE_IDS[kind]:
            continue
        _, layer, short, _ = name.split(".")
        tw = ternarize(masters[f"model.layers.{layer}.{HF_NAMES[short]}.weight"], tensor=name)
        assert ne == [tw.shape[1], tw.shape[0]], name  # ggml ne is the torch shape reversed
        size = SIZES[kind](*tw.shape)
        # The tensor table's offsets step by nbytes padded to 32 (the peer's writer adds the 32-byte
        # scale slot); every size here is already a multiple of 32, so nothing else sits between.
        assert len(blob) == size, (name, len(blob), size)
        found.append((name, tw, blob))
    assert len(found) == 14
    return found


# --- 1-3: the peer's bytes ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tl2", "tl1"])
def test_encode_matches_peer_bytes(tiny_a: Path, kind: str) -> None:
    """Every byte, the zero padding up to pad32(F), the f32 scale and its 28 zero bytes included.
    Nothing is masked: the peer leaves no byte of a TL tensor unspecified."""
    config = read_kernel_config(tiny_a / f"tiny-a-{kind}.kernel_config.ini", kind)
    layout = LAYOUTS[kind]
    for name, tw, blob in peer_tensors(tiny_a, kind):
        mine = layout.encode(tw, tiling=config, tensor=name)
        assert mine.dtype == np.uint8 and len(mine) == layout.nbytes(tw.shape)
        diff = np.flatnonzero(mine != blob)
        assert diff.size == 0, f"{name}: {diff.size} bytes differ, first at {diff[:5]}"


@pytest.mark.parametrize("kind", ["tl2", "tl1"])
def test_decode_peer_bytes_gives_ternarized_master(tiny_a: Path, kind: str) -> None:
    config = read_kernel_config(tiny_a / f"tiny-a-{kind}.kernel_config.ini", kind)
    for name, tw, blob in peer_tensors(tiny_a, kind):
        decoded = LAYOUTS[kind].decode(blob, tw.shape, tiling=config, tensor=name)
        assert decoded.same_as(tw), name


def test_peer_configs_are_what_choose_config_picks(tiny_a: Path) -> None:
    for kind, tiling in (("tl1", Tiling(128, 64, 32)), ("tl2", Tiling(128, 96, 32))):
        peer = read_kernel_config(tiny_a / f"tiny-a-{kind}.kernel_config.ini", kind)
        assert list(peer.items()) == [(s, tiling) for s in TINY_A_SHAPES]
        assert dict(choose_config(kind, TINY_A_SHAPES)) == dict(peer)


# --- the notes' loop nests, as literal per-element references (small shapes only) ---------------


def tl1_loop_reference(codes: np.ndarray, t: Tiling) -> bytes:
    m_rows, k_cols = codes.shape
    by = 256 // t.bm
    idx = lambda m, p: 3 * int(codes[m, 2 * p]) + int(codes[m, 2 * p + 1]) + 4  # noqa: E731
    out = bytearray()
    for tm in range(m_rows // t.BM):
        for tk in range(k_cols // t.BK):
            for rb in range(t.BM // t.bm):
                for kb in range(t.BK // by):
                    for rg in range(t.bm // 16):
                        for kh in range(by // 4):
                            for rj in range(16):
                                m = tm * t.BM + rb * t.bm + rg * 16 + rj
                                p = tk * t.BK // 2 + kb * by // 2 + 2 * kh
                                out.append(idx(m, p) << 4 | idx(m, p + 1))
    return bytes(out)


def tl2_loop_reference(codes: np.ndarray, t: Tiling) -> bytes:
    m_rows, k_cols = codes.shape
    three_k = k_cols // t.BK * t.BK
    v = lambda m, g: 9 * int(codes[m, 3 * g]) + 3 * int(codes[m, 3 * g + 1]) + int(codes[m, 3 * g + 2])  # noqa: E731
    idx = lambda m, p: 3 * int(codes[m, three_k + 2 * p]) + int(codes[m, three_k + 2 * p + 1]) + 4  # noqa: E731
    mags, signs, pairs = bytearray(), bytearray(), bytearray()
    for tm in range(m_rows // t.BM):
        for tk in range(three_k // t.BK):
            for rb in range(t.BM // 32):
                for kb in range(t.BK // 6):
                    for c in (0, 2, 1, 3):
                        for r8 in range(8):
                            m, g = tm * t.BM + rb * 32 + 8 * c + r8, tk * t.BK // 3 + 2 * kb
                            mags.append(abs(v(m, g)) << 4 | abs(v(m, g + 1)))
                for ks in range(t.BK // 24):
                    for b in range(16):
                        word = 0
                        for a in range(16):
                            m, g = tm * t.BM + rb * 32 + 16 * (a % 2) + b, tk * t.BK // 3 + 8 * ks + a // 2
                            word |= (v(m, g) < 0) << (15 - a)
                        signs += struct.pack("<H", word)
        for tk in range((k_cols - three_k) // 32):
            for rb in range(t.BM // 32):
                for kb in range(8):
                    for c in (0, 2, 1, 3):
                        for r8 in range(8):
                            m, p = tm * t.BM + rb * 32 + 8 * c + r8, tk * 16 + 2 * kb
                            pairs.append(idx(m, p) << 4 | idx(m, p + 1))
    return bytes(mags + signs + pairs)


@pytest.mark.parametrize(
    "kind, shape, tiling",
    [
        ("tl1", (64, 128), Tiling(64, 64, 64)),
        ("tl1", (128, 96), Tiling(64, 32, 32)),
        ("tl1", (96, 64), Tiling(96, 16, 32)),
        ("tl2", (64, 288), Tiling(64, 96, 32)),  # two_k = 0
        ("tl2", (96, 320), Tiling(32, 96, 32)),  # two_k = 32, three row tiles
        ("tl2", (64, 256), Tiling(64, 192, 32)),  # two_k = 64
        ("tl2", (64, 520), Tiling(64, 264, 32)),  # two_k = 256, the most F leaves room for
    ],
)
def test_encode_follows_the_notes_loop_nests(kind: str, shape: tuple[int, int], tiling: Tiling) -> None:
    codes = np.random.default_rng(sum(shape)).integers(-1, 2, shape, dtype=np.int8)
    mine = LAYOUTS[kind].encode(TernaryWeight(codes, 0.25), tiling=tiling)
    reference = (tl1_loop_reference if kind == "tl1" else tl2_loop_reference)(codes, tiling)
    assert mine[: len(reference)].tobytes() == reference
    assert not mine[len(reference) : -32].any()  # zero padding up to pad32(F)
    assert mine[-32:].tobytes() == struct.pack("<f", 0.25) + bytes(28)


# --- 4: round trips over every valid tiling ------------------------------------------------------


@st.composite
def weight_and_tiling(draw, kind: str):
    m = 32 * draw(st.integers(1, 10))
    k = 16 * draw(st.integers(1, 48)) if kind == "tl1" else 8 * draw(st.integers(32, 100))
    tiling = draw(st.sampled_from(valid_tilings(kind, m, k)))
    codes = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(-1, 2, (m, k), dtype=np.int8)
    beta = draw(st.floats(0.001, 10.0))
    return TernaryWeight(codes, beta), tiling


@pytest.mark.parametrize("kind", ["tl1", "tl2"])
@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_round_trip_every_valid_tiling(kind: str, data) -> None:
    tw, tiling = data.draw(weight_and_tiling(kind))
    before = tw.codes.copy()
    blob = LAYOUTS[kind].encode(tw, tiling=tiling)
    assert len(blob) == SIZES[kind](*tw.shape)
    assert LAYOUTS[kind].decode(blob, tw.shape, tiling=tiling).same_as(tw)
    assert np.array_equal(tw.codes, before)  # the caller's array is untouched


# --- 5: 2B4T shapes and the ini files ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tl1", "tl2"])
def test_2b4t_shapes_round_trip_with_chosen_tilings(kind: str, tmp_path: Path) -> None:
    config = choose_config(kind, SHAPES_2B4T + SHAPES_2B4T[:1])
    assert list(config) == SHAPES_2B4T
    expected = Tiling(128, 64, 32) if kind == "tl1" else Tiling(128, 96, 32)
    assert set(config.values()) == {expected}
    rng = np.random.default_rng(2560)
    for shape in SHAPES_2B4T:
        tw = TernaryWeight(rng.integers(-1, 2, shape, dtype=np.int8), np.float32(0.0421))
        blob = LAYOUTS[kind].encode(tw)  # tiling chosen automatically
        assert len(blob) == SIZES[kind](*shape) == LAYOUTS[kind].nbytes(shape)
        assert LAYOUTS[kind].decode(blob, shape, tiling=config).same_as(tw)
    write_kernel_config(config, tmp_path / "kernel_config.ini")
    back = read_kernel_config(tmp_path / "kernel_config.ini", kind)
    assert list(back.items()) == list(config.items())


def test_tl2_2b4t_sizes_match_the_notes() -> None:
    # reference note §2.4 / §4.4: pad32(F) per shape; the 32-byte scale slot comes on top
    for shape, padded in zip(SHAPES_2B4T, (1_392_640, 348_160, 3_760_128, 3_713_728), strict=True):
        assert TL2().nbytes(shape) == padded + 32


def test_written_ini_matches_the_peers_files(tiny_a: Path) -> None:
    tl1_peer = (tiny_a / "tiny-a-tl1.kernel_config.ini").read_bytes()
    tl2_peer = (tiny_a / "tiny-a-tl2.kernel_config.ini").read_bytes()
    stream = io.BytesIO()
    write_kernel_config(choose_config("tl1", TINY_A_SHAPES), stream)
    assert stream.getvalue() == tl1_peer
    # codegen_tl{1,2}.py both write with ConfigParser.write, which ends every section with a blank
    # line (so do all six preset_kernels ini files); the copied tiny-a-tl2 ini lacks the final
    # "\n". We write what codegen writes and accept the difference of that one byte only.
    text = io.StringIO()
    write_kernel_config(choose_config("tl2", TINY_A_SHAPES), text)
    assert text.getvalue().encode() == tl2_peer + b"\n"


def test_read_kernel_config_errors_name_file_section_and_key(tmp_path: Path) -> None:
    path = tmp_path / "kernel_config.ini"
    path.write_text("[Kernels_0]\nm = 256\nk = 256\nbm = 128\nbk = 96\n")
    with pytest.raises(FormatError, match=r"kernel_config\.ini: section \[Kernels_0\] has no key 'bmm'"):
        read_kernel_config(path)
    path.write_text("[Kernels_3]\nM = 256\nK = 256\nBM = 128\nBK = x\nbmm = 32\n")
    with pytest.raises(FormatError, match=r"section \[Kernels_3\] key 'bk' must be a positive integer, got 'x'"):
        read_kernel_config(path)
    path.write_text("m = 1\n")
    with pytest.raises(FormatError, match=r"kernel_config\.ini: not a kernel_config ini"):
        read_kernel_config(path)
    path.write_text(render_kernel_config({(640, 2560): Tiling(384, 96, 32)}))
    with pytest.raises(ShapeError, match=r"section \[Kernels_0\]: TL2 needs M % BM == 0: M=640, BM=384"):
        read_kernel_config(path, "tl2")
    assert read_kernel_config(path)[(640, 2560)] == Tiling(384, 96, 32)  # without a kind: no check


# --- 6: shapes and tilings that cannot work ------------------------------------------------------


@pytest.mark.parametrize(
    "kind, shape, tiling, rule",
    [
        ("tl2", (640, 2560), Tiling(384, 96, 32), "TL2 needs M % BM == 0: M=640, BM=384"),
        ("tl2", (640, 2560), Tiling(128, 96, 64), "TL2 needs bm == 32: bm=64"),
        ("tl2", (640, 2560), Tiling(128, 100, 32), "TL2 needs BK % 24 == 0: BK=100"),
        ("tl2", (640, 2560), Tiling(128, 72, 32), "TL2 needs (K - K // BK * BK) % 32 == 0: K=2560, BK=72, two_k=40"),
        ("tl2", (64, 600), Tiling(64, 312, 32), "TL2 needs K % BK <= 256: K=600, BK=312, two_k=288"),
        ("tl2", (64, 256), Tiling(64, 288, 32), "TL2 needs BK <= K: K=256, BK=288"),
        ("tl2", (640, 2560), Tiling(128, 0, 32), "TL2 needs positive BM, BK and bm: BM=128, BK=0, bm=32"),
        ("tl1", (640, 2560), Tiling(128, 64, 16), "TL1 needs bm in {32, 64}: bm=16"),
        ("tl1", (640, 2560), Tiling(96, 64, 64), "TL1 needs BM % bm == 0: BM=96, bm=64"),
        ("tl1", (6912, 2560), Tiling(160, 64, 32), "TL1 needs M % BM == 0: M=6912, BM=160"),
        ("tl1", (640, 2560), Tiling(128, 36, 32), "TL1 needs BK % (256 / bm) == 0: BK=36, bm=32"),
        ("tl1", (640, 2560), Tiling(128, 96, 32), "TL1 needs K % BK == 0: K=2560, BK=96"),
    ],
)
def test_bad_tiling_names_shape_and_rule(kind: str, shape: tuple[int, int], tiling: Tiling, rule: str) -> None:
    tw = TernaryWeight(np.zeros(shape, np.int8), 1.0)
    for call in (
        lambda: check_tiling(kind, shape, tiling),
        lambda: LAYOUTS[kind].check_shape(shape, tiling=tiling),
        lambda: LAYOUTS[kind].encode(tw, tiling=tiling),
        lambda: LAYOUTS[kind].decode(np.zeros(SIZES[kind](*shape), np.uint8), shape, tiling=tiling),
    ):
        with pytest.raises(ShapeError) as info:
            call()
        assert f"shape {list(shape)}" in str(info.value) and rule in str(info.value)
    assert tiling not in valid_tilings(kind, *shape)


@pytest.mark.parametrize(
    "kind, shape, rule",
    [
        ("tl2", (100, 2560), "TL2 needs M % 32 == 0 (BM is a multiple of bm >= 32): M=100"),
        ("tl2", (640, 200), "TL2 needs K >= 256 (size formula (K-256)*M/3*5/8): K=200"),
        ("tl2", (640, 2564), "TL2 needs K % 8 == 0"),
        ("tl1", (48, 2560), "TL1 needs M % 32 == 0 (BM is a multiple of bm >= 32): M=48"),
        ("tl1", (640, 2568), "TL1 needs K % 16 == 0 (LUT built 16 columns at a time): K=2568"),
    ],
)
def test_untileable_shapes_raise(kind: str, shape: tuple[int, int], rule: str) -> None:
    for call in (
        lambda: choose_tiling(kind, *shape),
        lambda: choose_config(kind, [shape]),
        lambda: LAYOUTS[kind].check_shape(shape),
        lambda: LAYOUTS[kind].nbytes(shape),
        lambda: LAYOUTS[kind].encode(TernaryWeight(np.zeros(shape, np.int8), 1.0)),
    ):
        with pytest.raises(ShapeError) as info:
            call()
        assert f"shape {list(shape)}" in str(info.value) and rule in str(info.value)
    assert valid_tilings(kind, *shape) == []


@pytest.mark.parametrize(
    "kind, shape, tiling",
    [
        ("tl1", (1536, 1536), Tiling(128, 64, 64)),  # bitnet_b1_58-large preset
        ("tl1", (3200, 8640), Tiling(160, 64, 32)),  # bitnet_b1_58-3B preset
        ("tl2", (1536, 1536), Tiling(128, 192, 32)),
        ("tl2", (4096, 1536), Tiling(128, 96, 32)),  # the preset 256/96/64 breaks bm == 32
        ("tl2", (96, 520), Tiling(96, 264, 32)),  # BK 96 leaves two_k = 40: nearest valid BK
        ("tl1", (96, 48), Tiling(96, 48, 32)),  # BK nearest 64 that divides K
    ],
)
def test_choose_tiling_prefers_presets_then_documented_order(kind: str, shape: tuple[int, int], tiling: Tiling) -> None:
    assert choose_tiling(kind, *shape) == tiling == valid_tilings(kind, *shape)[0]


def test_config_without_the_shape_raises() -> None:
    config = KernelConfig({(256, 256): Tiling(128, 96, 32)})
    with pytest.raises(ShapeError, match=r"tensor 'blk.0.attn_k.weight'.*no tiling for M=128, K=256 \(has: 256x256\)"):
        TL2().encode(TernaryWeight(np.zeros((128, 256), np.int8), 1.0), tiling=config, tensor="blk.0.attn_k.weight")


# --- decode of damaged bytes, beta handling --------------------------------------------------------


def test_decode_rejects_impossible_indices() -> None:
    shape, tiling = (64, 256), Tiling(64, 96, 32)
    blob = TL2().encode(TernaryWeight(np.zeros(shape, np.int8), 1.0), tiling=tiling)
    bad = blob.copy()
    bad[0] = 0xE0  # magnitude 14
    with pytest.raises(NotTernary, match="1 TL2 triplet magnitudes are above 13"):
        TL2().decode(bad, shape, tiling=tiling)
    bad = blob.copy()
    bad[64 * 192 // 6 + 64 * 192 // 24] = 0x49  # first two-part byte: pair index 9
    with pytest.raises(NotTernary, match="TL2 two-part bytes hold a pair index above 8"):
        TL2().decode(bad, shape, tiling=tiling)
    tl1_blob = TL1().encode(TernaryWeight(np.zeros(shape, np.int8), 1.0), tiling=Tiling(64, 64, 32))
    tl1_blob[5] = 0x4F
    with pytest.raises(NotTernary, match="1 TL1 bytes hold a pair index above 8"):
        TL1().decode(tl1_blob, shape, tiling=Tiling(64, 64, 32))


@pytest.mark.parametrize("kind", ["tl1", "tl2"])
def test_beta_lives_in_the_slot_and_can_be_overridden(kind: str) -> None:
    codes = np.random.default_rng(7).integers(-1, 2, (64, 256), dtype=np.int8)
    blob = LAYOUTS[kind].encode(TernaryWeight(codes, np.float32(0.1)))
    assert blob[-32:-28].tobytes() == np.float32(0.1).tobytes() and not blob[-28:].any()
    assert LAYOUTS[kind].decode(blob, (64, 256)).beta == np.float32(0.1)
    assert LAYOUTS[kind].decode(blob, (64, 256), beta=2.5).beta == np.float32(2.5)
    with pytest.raises(ShapeError, match=f"{kind} data for shape \\[64, 256\\] is {len(blob)} bytes, got {len(blob) - 1}"):
        LAYOUTS[kind].decode(blob[:-1], (64, 256))


def test_specs() -> None:
    assert (TL1.spec.name, dict(TL1.spec.type_ids), TL1.spec.scale) == ("tl1", {"2025": 38, "2026": 38}, "sidecar:f32")
    assert (TL2.spec.name, dict(TL2.spec.type_ids), TL2.spec.scale) == ("tl2", {"2025": 39, "2026": 42}, "sidecar:f32")
    assert "42" in TL2.spec.source
    for flavour, type_id in TL2.spec.type_ids.items():  # what the writer and reader use
        assert TypeTable.for_target(flavour).type_id("TL2") == type_id
        assert TypeTable.for_target(flavour).name(type_id) == "TL2"
