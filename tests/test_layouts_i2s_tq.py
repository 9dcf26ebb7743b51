"""I2_S (x86 and ARM), TQ2_0 and TQ1_0: peer bytes, gguf-py parity, worked examples, round trips."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.errors import FormatError, NotTernary, ScaleNotRepresentable, ShapeError
from bitnet_pack.formats.dtypes import bf16_to_f32
from bitnet_pack.formats.ggml_types import TypeTable, i2s_nbytes
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.formats.ternary import TernaryWeight, ternarize

I2S_NAMES = ("i2_s", "i2_s_arm")
TQ_TYPES = {"tq2_0": GGMLQuantizationType.TQ2_0, "tq1_0": GGMLQuantizationType.TQ1_0}
GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
I2S_TYPE = 36


# ---- the peer files -----------------------------------------------------------------------

def read_bf16_safetensors(path) -> dict[str, np.ndarray]:
    """name -> float32 array, for the BF16 tensors of one safetensors file (header by hand)."""
    raw = path.read_bytes()
    (length,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + length])
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "BF16":
            continue
        start, end = (8 + length + x for x in info["data_offsets"])
        out[name] = bf16_to_f32(np.frombuffer(raw[start:end], dtype="<u2")).reshape(info["shape"])
    return out


@pytest.fixture(scope="module")
def peer(tiny_a):
    """(gguf name, master float32 weight, peer I2_S bytes) for all 14 projections."""
    masters = read_bf16_safetensors(tiny_a / "tiny-a-bf16" / "model.safetensors")
    gguf_file = GGUFFile(tiny_a / "tiny-a-i2_s.gguf")
    rows = []
    for layer in range(2):
        for hf, gg in GGUF_NAMES.items():
            name = f"blk.{layer}.{gg}.weight"
            master = masters[f"model.layers.{layer}.{hf}.weight"]
            info = gguf_file.tensor_info(name)
            assert (info.type_id, info.shape, info.nbytes) == (I2S_TYPE, master.shape, i2s_nbytes(*master.shape))
            rows.append((name, master, gguf_file.tensor_bytes(name)))  # read-only views
    assert sum(t.type_id == I2S_TYPE for t in gguf_file.tensors.values()) == len(rows) == 14
    return rows


# ---- 1, 2: bitnet.cpp's llama-quantize output --------------------------------------------

def test_i2s_encode_matches_peer_bytes(peer):
    layout = get_layout("i2_s")
    for name, master, blob in peer:
        ours = layout.encode(ternarize(master, tensor=name))
        assert ours.dtype == np.uint8 and ours.shape == blob.shape, name
        scale_end = master.size // 4 + 4
        assert np.array_equal(ours[:scale_end], blob[:scale_end]), name
        assert not ours[scale_end:].any(), name


def test_i2s_decode_of_peer_bytes_gives_the_ternarization(peer):
    layout = get_layout("i2_s")
    garbage = 0
    for name, master, blob in peer:
        want = ternarize(master, tensor=name)
        got = layout.decode(blob, master.shape)
        assert np.array_equal(got.codes, want.codes), name
        assert got.beta.tobytes() == want.beta.tobytes(), name
        garbage += bool(blob[master.size // 4 + 4 :].any())
    assert garbage > 0  # the peer's uninitialised tail bytes really were ignored


# ---- 5: worked examples ------------------------------------------------------------------

def _quarters(a: int, b: int, c: int, d: int) -> np.ndarray:
    """1 x 128 codes: four runs of 32 equal values."""
    return np.repeat(np.array([a, b, c, d], dtype=np.int8), 32)[None, :]


EXAMPLE_128 = _quarters(1, 0, -1, 1)
EXAMPLE_128[0, 0] = -1
EXAMPLE_128[0, 127] = 0
HALF = [0x00, 0x00, 0x00, 0x3F]  # f32 0.5, little-endian


def test_i2s_x86_worked_example():
    # byte p = q[p]<<6 | q[p+32]<<4 | q[p+64]<<2 | q[p+96], code = t + 1
    # p = 0: (-1,0,-1,+1) -> 0b00_01_00_10 = 0x12; p = 1..30: (+1,0,-1,+1) -> 0b10_01_00_10 = 0x92;
    # p = 31: (+1,0,-1,0) -> 0b10_01_00_01 = 0x91; then f32 beta and 28 zero bytes.
    want = [0x12] + [0x92] * 30 + [0x91] + HALF + [0] * 28
    blob = get_layout("i2_s").encode(TernaryWeight(EXAMPLE_128, 0.5))
    assert blob.tolist() == want


def test_i2s_arm_worked_example():
    # 64-element blocks of 16 bytes: byte p = q[p]<<6 | q[p+16]<<4 | q[p+32]<<2 | q[p+48]
    # block 0 (elements 0..63 = +1,+1,0,0 by quarter; q[0] = -1): 0x25, then 0b10_10_01_01 = 0xA5
    # block 1 (elements 64..127 = -1,-1,+1,+1 by quarter; q[127] = 0): 0b00_00_10_10 = 0x0A, last 0x09
    want = [0x25] + [0xA5] * 15 + [0x0A] * 15 + [0x09] + HALF + [0] * 28
    blob = get_layout("i2_s_arm").encode(TernaryWeight(EXAMPLE_128, 0.5))
    assert blob.tolist() == want


EXAMPLE_256 = np.concatenate([_quarters(1, 0, -1, 1), _quarters(0, 0, 0, 0)], axis=1)
EXAMPLE_256[0, 0] = -1
EXAMPLE_256[0, 255] = -1


def test_tq2_0_worked_example():
    # byte 32h+m = a[128h+m] | a[128h+32+m]<<2 | a[128h+64+m]<<4 | a[128h+96+m]<<6, a = t + 1
    # half 0: m = 0: (0,1,0,2) -> 0x84; m = 1..31: (2,1,0,2) -> 0x86
    # half 1: all zero codes (1,1,1,1) -> 0x55; m = 31 holds a[255] = 0 on top -> 0x15; d = fp16 0.5
    want = [0x84] + [0x86] * 31 + [0x55] * 31 + [0x15] + [0x00, 0x38]
    weight = TernaryWeight(EXAMPLE_256, 0.5)
    blob = get_layout("tq2_0").encode(weight)
    assert blob.tolist() == want
    assert np.array_equal(blob, quants.quantize(weight.dequantize(), GGMLQuantizationType.TQ2_0).ravel())


def test_tq1_0_worked_example():
    # Five trits per byte, most significant first; byte = ceil(v * 256 / 243).
    codes = np.zeros((1, 256), dtype=np.int8)
    codes[0, 0] = 1     # qs[0]  trits (2,1,1,1,1): v = 202 -> 213 = 0xD5
    codes[0, 160] = -1  # qs[32] trits (0,1,1,1,1): v = 40  -> 43  = 0x2B
    codes[0, 255] = 1   # qh[3]  trits (1,1,1,2,0): v = 123 -> 130 = 0x82
    # all-zero qs: (1,1,1,1,1), v = 121 -> 128 = 0x80; all-zero qh: (1,1,1,1,0), v = 120 -> 127 = 0x7F
    want = [0xD5] + [0x80] * 31 + [0x2B] + [0x80] * 15 + [0x7F] * 3 + [0x82] + [0x00, 0x38]
    weight = TernaryWeight(codes, 0.5)
    blob = get_layout("tq1_0").encode(weight)
    assert blob.tolist() == want
    assert np.array_equal(blob, quants.quantize(weight.dequantize(), GGMLQuantizationType.TQ1_0).ravel())


# ---- 3: round trips ----------------------------------------------------------------------

BLOCKS = {"i2_s": 128, "i2_s_arm": 64, "tq2_0": 256, "tq1_0": 256}


def _random_codes(seed: int, rows: int, cols: int, zeros: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=(rows, cols))
    return np.where(rng.random((rows, cols)) < zeros, np.int8(0), signs).astype(np.int8)


# bf16 bit patterns with exponents 2**-14 .. 2**15: all exactly representable in fp16.
bf16_betas = st.builds(
    lambda exponent, mantissa: bf16_to_f32(np.array([(exponent << 7) | mantissa], dtype=np.uint16))[0],
    st.integers(113, 142), st.integers(0, 127),
)
f32_betas = st.floats(min_value=0, max_value=2.0**100, width=32, allow_subnormal=True, exclude_min=True)  # beta > 0
densities = st.sampled_from([0.0, 0.38, 0.9, 0.995, 1.0])  # share of zero codes


@settings(deadline=None, max_examples=100)
@given(name=st.sampled_from(sorted(BLOCKS)), rows=st.integers(1, 67), blocks=st.integers(1, 4),
       zeros=densities, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_round_trip_is_exact(name, rows, blocks, zeros, seed, data):
    layout = get_layout(name)
    beta = data.draw(bf16_betas if name.startswith("tq") else f32_betas)
    weight = TernaryWeight(_random_codes(seed, rows, blocks * BLOCKS[name], zeros), beta)
    blob = layout.encode(weight)
    assert blob.dtype == np.uint8 and blob.shape == (layout.nbytes(weight.shape),)
    back = layout.decode(blob, weight.shape, beta=beta if not weight.codes.any() else None)
    assert back.same_as(weight)


@settings(deadline=None, max_examples=60)
@given(name=st.sampled_from(sorted(TQ_TYPES)), rows=st.integers(1, 67), blocks=st.integers(1, 3),
       zeros=densities, seed=st.integers(0, 2**32 - 1), beta=bf16_betas)
def test_tq_matches_gguf_py(name, rows, blocks, zeros, seed, beta):
    weight = TernaryWeight(_random_codes(seed, rows, blocks * 256, zeros), beta)
    blob = get_layout(name).encode(weight)
    reference = quants.quantize(weight.dequantize(), TQ_TYPES[name])
    assert np.array_equal(blob, reference.reshape(-1))
    back = get_layout(name).decode(blob, weight.shape, beta=beta)
    values = quants.dequantize(reference, TQ_TYPES[name])
    assert np.array_equal(back.codes, values / np.float32(beta))


def test_tq1_0_every_byte_value_round_trips():
    # 8 blocks whose 48 qs bytes take all 243 values and whose 4 qh bytes take all 81.
    trits = np.ones((8, 256), dtype=np.int8)
    values = np.arange(8 * 48) % 243
    qs = np.stack([values // 3 ** (4 - n) % 3 for n in range(5)], axis=-1).reshape(8, 48, 5)
    trits[:, :160] = qs[:, :32].transpose(0, 2, 1).reshape(8, 160)
    trits[:, 160:240] = qs[:, 32:].transpose(0, 2, 1).reshape(8, 80)
    low = np.arange(8 * 4) * 3 % 81  # 32 qh bytes, every residue of 81 reached over the test
    for part in range(3):
        vals = (low + part) % 81
        qh = np.stack([vals // 3 ** (3 - n) % 3 for n in range(4)], axis=-1).reshape(8, 4, 4)
        trits[:, 240:] = qh.transpose(0, 2, 1).reshape(8, 16)
        weight = TernaryWeight((trits - 1).astype(np.int8).reshape(1, -1), 1.0)
        blob = get_layout("tq1_0").encode(weight)
        reference = quants.quantize(weight.dequantize(), GGMLQuantizationType.TQ1_0).ravel()
        assert np.array_equal(blob, reference)
        assert get_layout("tq1_0").decode(blob, weight.shape).same_as(weight)


# ---- 4: variants, scales, errors ---------------------------------------------------------

def test_i2s_x86_and_arm_bytes_differ_but_decode_alike():
    weight = TernaryWeight(_random_codes(7, 5, 384, 0.4), 0.25)
    x86, arm = get_layout("i2_s").encode(weight), get_layout("i2_s_arm").encode(weight)
    assert x86.size == arm.size and not np.array_equal(x86, arm)
    assert get_layout("i2_s").decode(x86, weight.shape).same_as(weight)
    assert get_layout("i2_s_arm").decode(arm, weight.shape).same_as(weight)
    # the ARM build misreading an x86 file (bitnet.cpp issue #585): same bytes, other codes
    assert not get_layout("i2_s_arm").decode(x86, weight.shape).same_as(weight)


def test_i2s_decode_ignores_tail_garbage_and_rejects_code_3():
    weight = TernaryWeight(_random_codes(3, 3, 256, 0.3), 0.125)
    blob = get_layout("i2_s").encode(weight)
    blob[-28:] = np.arange(1, 29, dtype=np.uint8)
    assert get_layout("i2_s").decode(blob, weight.shape).same_as(weight)
    blob[5] |= 0b11_00_00_11  # two elements of byte 5 become code 3
    with pytest.raises(NotTernary, match=r"^2 of 768 i2_s codes are 3"):
        get_layout("i2_s").decode(blob, weight.shape)


def test_sizes_and_table_entries():
    tables = TypeTable.for_target(None)
    for shape in [(256, 256), (128, 256), (6912, 2560), (2560, 6912), (3, 512)]:
        for name in I2S_NAMES:
            assert get_layout(name).nbytes(shape) == i2s_nbytes(*shape)
        for name, qtype in TQ_TYPES.items():
            assert get_layout(name).nbytes(shape) == tables.nbytes(int(qtype), shape)
    assert dict(get_layout("I2_S").spec.type_ids) == dict(get_layout("i2-s-arm").spec.type_ids) == {"2025": 36, "2026": 36}
    assert dict(get_layout("TQ1_0").spec.type_ids) == {"mainline": 34}
    assert dict(get_layout("TQ2_0").spec.type_ids) == {"mainline": 35}
    assert get_layout("TQ2_0").spec.ggml_type == 35 and get_layout("TQ1_0").spec.file_type == 36
    assert get_layout("tq2_0").nbytes((2, 512)) == 2 * 2 * 66
    assert get_layout("tq1_0").nbytes((2, 512)) == 2 * 2 * 54


@pytest.mark.parametrize("name, shape, numbers", [
    ("i2_s", (4, 192), ["128", "192", "[4, 192]"]),
    ("i2_s_arm", (4, 96), ["64", "96", "[4, 96]"]),
    ("tq2_0", (3, 384), ["256", "384", "[3, 384]"]),
    ("tq1_0", (1, 128), ["256", "128", "[1, 128]"]),
])
def test_shape_errors_name_the_rule(name, shape, numbers):
    codes = np.zeros(shape, dtype=np.int8)
    for call in (lambda: get_layout(name).encode(TernaryWeight(codes, 1.0)),
                 lambda: get_layout(name).nbytes(shape),
                 lambda: get_layout(name).decode(np.zeros(64, np.uint8), shape)):
        with pytest.raises(ShapeError, match="must not cross a row") as info:
            call()
        assert all(n in str(info.value) for n in numbers)


def test_decode_rejects_wrong_length():
    with pytest.raises(ShapeError, match="is 1056 bytes, got 1055"):
        get_layout("tq2_0").decode(np.zeros(1055, np.uint8), (4, 1024))


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_encode_does_not_touch_its_input(name):
    codes = _random_codes(11, 9, 512, 0.5)
    keep = codes.copy()
    codes.flags.writeable = False
    get_layout(name).encode(TernaryWeight(codes, 0.5))
    assert np.array_equal(codes, keep)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_encode_rejects_non_ternary_codes(name):
    codes = np.zeros((2, 256), dtype=np.int8)
    codes[1, 7] = 2
    with pytest.raises(NotTernary, match="^1 of 512 codes"):
        get_layout(name).encode(TernaryWeight(codes, 1.0))


@pytest.mark.parametrize("name", sorted(TQ_TYPES))
def test_tq_refuses_a_beta_fp16_cannot_hold(name):
    weight = TernaryWeight(_random_codes(5, 4, 256, 0.3), np.float32(0.1))
    with pytest.raises(ScaleNotRepresentable, match=r"0\.10000000149011612 is not exactly representable"):
        get_layout(name).encode(weight)
    lossy = get_layout(name).encode(weight, lossy=True)
    assert np.array_equal(lossy, quants.quantize(weight.dequantize(), TQ_TYPES[name]).ravel())
    assert get_layout(name).decode(lossy, weight.shape).beta == np.float32(np.float16(0.1))
    for beta in (1e5, 1e-9):  # out of fp16's range: refused even when lossy
        with pytest.raises(ScaleNotRepresentable, match="outside fp16's range"):
            get_layout(name).encode(TernaryWeight(weight.codes, beta), lossy=True)
    # fp16-exact values that bf16 cannot hold are fine too
    exact = TernaryWeight(weight.codes, 1 + 2**-10)
    assert get_layout(name).decode(get_layout(name).encode(exact), exact.shape).same_as(exact)


@pytest.mark.parametrize("name", sorted(TQ_TYPES))
def test_tq_decode_rejects_blocks_that_disagree_on_d(name):
    rng = np.random.default_rng(2)
    not_ternary = rng.normal(size=(3, 512)).astype(np.float32)  # six blocks, six absmax values
    blob = quants.quantize(not_ternary, TQ_TYPES[name]).ravel()
    with pytest.raises(NotTernary, match=r"^5 of 6 non-zero .* blocks have a d other than"):
        get_layout(name).decode(blob, (3, 512))


@pytest.mark.parametrize("name", sorted(TQ_TYPES))
def test_tq_all_zero_tensor_and_given_beta(name):
    zero = TernaryWeight(np.zeros((2, 256), dtype=np.int8), 0.75)
    blob = get_layout(name).encode(zero)
    assert blob[-2:].tolist() == [0, 0]  # an all-zero block stores d = 0, as gguf-py does
    assert get_layout(name).decode(blob, zero.shape).beta == 1.0  # ternary.ZERO_BETA: no d carries a beta
    assert get_layout(name).decode(blob, zero.shape, beta=0.75).same_as(zero)
    some = TernaryWeight(_random_codes(1, 2, 256, 0.5), 0.75)
    with pytest.raises(FormatError, match="carry beta 0.75 but beta=0.5"):
        get_layout(name).decode(get_layout(name).encode(some), some.shape, beta=0.5)


def test_tq2_0_rejects_code_3():
    blob = get_layout("tq2_0").encode(TernaryWeight(_random_codes(4, 1, 256, 0.2), 1.0))
    blob[10] = 0xFF
    with pytest.raises(NotTernary, match="^4 of 256 tq2_0 codes are 3"):
        get_layout("tq2_0").decode(blob, (1, 256))


def test_tq1_0_rejects_bytes_no_quantizer_writes():
    blob = get_layout("tq1_0").encode(TernaryWeight(_random_codes(4, 1, 256, 0.2), 1.0))
    blob[3] = 1     # ceil(v*256/243) skips 1 (v = 0 -> 0, v = 1 -> 2)
    blob[49] = 128  # a qh byte whose fifth trit is not 0
    with pytest.raises(NotTernary, match="^2 of 52 tq1_0 bytes are not the base-3 encoding"):
        get_layout("tq1_0").decode(blob, (1, 256))
