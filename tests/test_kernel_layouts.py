"""The kernel on every layout's own bytes: peers' files against an independent integer oracle
(tests/layout_oracle.py), odd shapes, tilings, backends and thread counts against the numpy
reference, and the byte checks."""
from __future__ import annotations

from pathlib import Path

import layout_oracle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.engine import kernel
from bitnet_pack.errors import FormatError, NotTernary, ShapeError, UsageError
from bitnet_pack.families.arch import BITNET_2B4T
from bitnet_pack.formats import kernel_formats
from bitnet_pack.formats.kernel_config import Tiling, read_kernel_config, valid_tilings
from bitnet_pack.formats.ternary import TernaryWeight

BACKENDS = kernel.available_backends()
PROJECTIONS = [f"model.layers.{layer}.{part}.weight" for layer in range(2) for part in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
GGUF_LAYOUTS = {"I2_S": "i2_s", "TL1": "tl1", "TL2": "tl2", "TQ2_0": "tq2_0", "TQ1_0": "tq1_0"}


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def tiling_tuple(matrix: kernel.PackedMatrix) -> tuple[int, int, int] | None:
    return None if matrix.tiling is None else (matrix.tiling.BM, matrix.tiling.BK, matrix.tiling.bm)


def assert_kernel_equals_oracle(matrix: kernel.PackedMatrix, rng: np.random.Generator, n: int = 3) -> None:
    """Every backend's int32 sums equal the oracle's on the matrix's own bytes, and its float
    outputs equal the numpy reference bit for bit."""
    k = matrix.shape[1]
    q = rng.integers(-128, 128, (n, k)).astype(np.int8)
    x = rng.standard_normal((n, k)).astype(np.float32)
    want = layout_oracle.sums(matrix.layout, matrix.codes_bytes, matrix.shape, q, tiling_tuple(matrix))
    want_y = kernel.reference_linear(matrix, x)
    for backend in BACKENDS:
        with kernel.use_backend(backend):
            assert np.array_equal(kernel.ternary_matmul_int(matrix, q), want), f"{matrix.layout} {backend}"
            assert np.array_equal(bits(kernel.ternary_linear(matrix, x)), bits(want_y)), f"{matrix.layout} {backend}"


# ---- peers' bytes ---------------------------------------------------------------------------


def gguf_matrices(path: Path, ini: Path | None = None, flavour: str | None = "auto"):
    """{HF name: PackedMatrix} of a GGUF's packed projections, from the mapped tensor bytes."""
    config = read_kernel_config(ini) if ini else None
    out = {}
    with GGUFFile(path, flavour=flavour) as gguf:
        for hf_name in PROJECTIONS:
            info = gguf.tensor_info(BITNET_2B4T.to_gguf(hf_name))
            layout = GGUF_LAYOUTS[info.type_name]
            tiling = config.tiling_for(tuple(info.shape)) if layout in ("tl1", "tl2") else None
            out[hf_name] = kernel.PackedMatrix.from_bytes(layout, gguf.tensor_bytes(info.name), info.shape,
                                                          tiling=tiling)
    return out


def packed_matrices(directory: Path, like: dict[str, kernel.PackedMatrix]):
    """The packed file's uint8 tensors, with the shapes (and betas) of `like`'s matrices."""
    with safe_open(directory / "model.safetensors", framework="np") as st_file:
        return {name: kernel.PackedMatrix("hf", st_file.get_tensor(name), like[name].shape, like[name].beta)
                for name in PROJECTIONS}


def test_tiny_a_peer_files_in_every_layout(tiny_a):
    """bitnet.cpp's I2_S, TL1 and TL2 files and transformers' packed file of tiny-a: the oracle
    reads one ternary matrix from each (the peers converted one model), and the kernel's sums
    on each file's bytes equal the oracle's on every backend."""
    files = {"i2_s": gguf_matrices(tiny_a / "tiny-a-i2_s.gguf"),
             "tl1": gguf_matrices(tiny_a / "tiny-a-tl1.gguf", tiny_a / "tiny-a-tl1.kernel_config.ini"),
             "tl2": gguf_matrices(tiny_a / "tiny-a-tl2.gguf", tiny_a / "tiny-a-tl2.kernel_config.ini")}
    files["hf"] = packed_matrices(tiny_a / "tiny-a-packed", files["i2_s"])
    rng = np.random.default_rng(21)
    for name in PROJECTIONS:
        codes = {layout: layout_oracle.codes_of(layout, m[name].codes_bytes, m[name].shape, tiling_tuple(m[name]))
                 for layout, m in files.items()}
        for layout, values in codes.items():
            assert np.array_equal(values, codes["i2_s"]), f"{name}: {layout} holds other codes than i2_s"
            assert np.array_equal(files[layout][name].codes(), values), f"{name}: {layout} numpy reading"
            assert_kernel_equals_oracle(files[layout][name], rng)
    assert {m.beta.tobytes() for m in (files["i2_s"][PROJECTIONS[0]], files["tl1"][PROJECTIONS[0]],
                                      files["tl2"][PROJECTIONS[0]])} == {files["i2_s"][PROJECTIONS[0]].beta.tobytes()}


FAMILIES = ["fam-1bitllm", "fam-falcon3", "fam-llama3"]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_vectors_mainline_tq2_0_and_bitnet_cpp_i2_s_tl2(shared_vectors, family):
    """The family vectors: mainline llama.cpp's TQ2_0 file and bitnet.cpp's I2_S and TL2 files
    of one checkpoint hold the same codes (the oracle says so), the kernel reads each exactly,
    and TQ2_0's per-block d is the I2_S beta rounded to fp16. The transformers packed file too
    (the GGUFs permute q and k rows for their RoPE, so only the other projections compare)."""
    d = shared_vectors / family
    i2s = gguf_matrices(d / f"{family}-i2_s.gguf", flavour="2025")
    tl2 = gguf_matrices(d / f"{family}-tl2.gguf", d / f"{family}-tl2.kernel_config.ini", flavour="2025")
    tq2 = gguf_matrices(d / f"{family}-mainline-tq2_0.gguf", flavour=None)
    # fam-1bitllm's checkpoint is a latent fp32 master: nothing packed to read there
    hf = {} if family == "fam-1bitllm" else packed_matrices(d / f"{family}-hf", i2s)
    rng = np.random.default_rng(22)
    for name in PROJECTIONS:
        want = layout_oracle.codes_of("i2_s", i2s[name].codes_bytes, i2s[name].shape)
        for matrix in (i2s[name], tl2[name], tq2[name], *([hf[name]] if hf else [])):
            if matrix.layout != "hf" or not name.endswith(("q_proj.weight", "k_proj.weight")):
                assert np.array_equal(layout_oracle.codes_of(matrix.layout, matrix.codes_bytes, matrix.shape,
                                                             tiling_tuple(matrix)), want), f"{name} {matrix.layout}"
            assert_kernel_equals_oracle(matrix, rng, n=2)
        assert tq2[name].beta == np.float32(np.float16(i2s[name].beta)), name


# ---- every layout, odd shapes, tilings, backends, threads ------------------------------------


def random_codes(rng: np.random.Generator, shape: tuple[int, int], density: float = 0.62) -> np.ndarray:
    return (rng.integers(-1, 2, shape) * (rng.random(shape) < density)).astype(np.int8)


def matrix_of(codes: np.ndarray, layout: str, tiling: Tiling | None = None, beta: float = 0.375) -> kernel.PackedMatrix:
    return kernel.PackedMatrix.from_ternary(TernaryWeight(codes, np.float32(beta)), layout, tiling=tiling)


def shapes_for(layout: str, data) -> tuple[tuple[int, int], Tiling | None]:
    """A shape (and tiling) the layout holds, drawn by hypothesis."""
    if layout in ("tl1", "tl2"):
        m = 32 * data.draw(st.integers(1, 8), label="m/32")
        k = data.draw(st.sampled_from([256, 288, 320, 384, 512] if layout == "tl2" else [16, 48, 64, 128, 256, 320]))
        tilings = valid_tilings(layout, m, k)
        return (m, k), data.draw(st.sampled_from(tilings[:40]), label="tiling")
    block = {"i2_s": 128, "i2_s_arm": 64, "tq2_0": 256, "tq1_0": 256, "hf": 1}[layout]
    m = data.draw(st.integers(1, 40), label="m")
    k = block * data.draw(st.integers(1, 5), label="blocks") + (data.draw(st.integers(0, 70)) if block == 1 else 0)
    return (m, k), None


@settings(deadline=None, max_examples=60)
@given(layout=st.sampled_from(sorted(layout_oracle.READERS)), n=st.sampled_from([1, 2, 5, 9, 67]),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_hypothesis_every_layout_equals_the_oracle_and_reference(layout, n, seed, data):
    shape, tiling = shapes_for(layout, data)
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, shape, rng.uniform(0, 1))
    matrix = matrix_of(codes, layout, tiling)
    assert np.array_equal(layout_oracle.codes_of(layout, matrix.codes_bytes, shape, tiling_tuple(matrix)), codes)
    assert np.array_equal(matrix.codes(), codes)
    assert_kernel_equals_oracle(matrix, rng, n)


TL_SHAPES = [("tl1", (256, 256)), ("tl1", (96, 48)), ("tl2", (256, 256)), ("tl2", (64, 544))]


@pytest.mark.parametrize("layout,shape", TL_SHAPES)
def test_every_tiling_the_converter_accepts(layout, shape):
    """Each valid (BM, BK, bm) of a shape lays the bytes out differently; each gives the oracle's sums."""
    rng = np.random.default_rng(list(shape))
    codes = random_codes(rng, shape)
    q = rng.integers(-128, 128, (2, shape[1])).astype(np.int8)
    want = q.astype(np.int64) @ codes.astype(np.int64).T
    tilings = valid_tilings(layout, *shape)
    assert len(tilings) > 3
    for tiling in tilings:
        matrix = matrix_of(codes, layout, tiling)
        for backend in BACKENDS:
            with kernel.use_backend(backend):
                assert np.array_equal(kernel.ternary_matmul_int(matrix, q), want), f"{tiling} {backend}"


@pytest.mark.parametrize("layout,shape,tiling", [
    ("i2_s_arm", (640, 2560 + 64), None), ("tq2_0", (384, 2560), None), ("tq1_0", (300, 2560), None),
    ("tl1", (512, 2560), Tiling(128, 64, 32)), ("tl2", (512, 2560), Tiling(128, 96, 32))])
def test_results_do_not_depend_on_threads(layout, shape, tiling):
    """Products on the pool (>= 2^20 MACs) with 1, 2 and 3 threads: bit-identical everywhere."""
    rng = np.random.default_rng(31)
    matrix = matrix_of(random_codes(rng, shape), layout, tiling)
    x = rng.standard_normal((70, shape[1])).astype(np.float32)
    want = kernel.reference_linear(matrix, x)
    before = kernel.num_threads()
    try:
        for threads in (1, 2, 3):
            kernel.set_num_threads(threads)
            for backend in BACKENDS:
                with kernel.use_backend(backend):
                    for n in (1, 70):
                        assert np.array_equal(bits(kernel.ternary_linear(matrix, x[:n])), bits(want[:n])), \
                            f"{layout} {backend} threads={threads} n={n}"
    finally:
        kernel.set_num_threads(before)


@pytest.mark.parametrize("layout,tiling", [("i2_s_arm", None), ("tq2_0", None), ("tq1_0", None),
                                           ("tl1", Tiling(32, 64, 32)), ("tl2", Tiling(32, 96, 32))])
@pytest.mark.parametrize("code", [-1, 1])
def test_extremes_do_not_saturate(layout, tiling, code):
    """All codes +-1 times q all -128 over the largest in_features the kernel takes (int16
    table entries and int16 maddubs sums must widen in time)."""
    k = 1 << 16 if layout != "tl2" else (1 << 16) - 64
    matrix = matrix_of(np.full((32, k), code, np.int8), layout, tiling)
    q = np.full((1, k), -128, np.int8)
    for backend in BACKENDS:
        with kernel.use_backend(backend):
            assert (kernel.ternary_matmul_int(matrix, q) == -128 * k * code).all(), backend


# ---- the bytes the kernel refuses ----------------------------------------------------------


def test_bad_bytes_are_refused_with_counts():
    rng = np.random.default_rng(41)
    codes = random_codes(rng, (64, 256))
    tq2 = matrix_of(codes, "tq2_0").data.copy()
    tq2[3] = 0xFF
    with pytest.raises(NotTernary, match="4 of 16384 tq2_0 codes are 3"):
        kernel.PackedMatrix.from_bytes("tq2_0", tq2, (64, 256))
    tq1 = matrix_of(codes, "tq1_0").data.copy()
    tq1[5] = 1  # ceil(v * 256 / 243) never is 1
    with pytest.raises(NotTernary, match="1 of 16384 tq1_0 bytes are no base-3 trits"):
        kernel.PackedMatrix.from_bytes("tq1_0", tq1, (64, 256))
    tl1 = matrix_of(codes, "tl1", Tiling(32, 64, 32)).data.copy()
    tl1[0] = 0x9F
    with pytest.raises(NotTernary, match="2 of 16384 tl1 pair indices are above 8"):
        kernel.PackedMatrix.from_bytes("tl1", tl1, (64, 256), tiling=Tiling(32, 64, 32))
    tl2 = matrix_of(codes, "tl2", Tiling(32, 96, 32)).data.copy()
    tl2[0] = 0xEE
    with pytest.raises(NotTernary, match="2 of 16384 tl2 triplet magnitudes are above 13"):
        kernel.PackedMatrix.from_bytes("tl2", tl2, (64, 256), tiling=Tiling(32, 96, 32))
    with pytest.raises(UsageError, match="pass tiling="):
        kernel.PackedMatrix.from_bytes("tl2", tl2, (64, 256))
    with pytest.raises(ShapeError, match="M % BM == 0"):
        kernel.PackedMatrix.from_bytes("tl2", tl2, (64, 256), tiling=Tiling(128, 96, 32))


def test_tq_block_scales_must_make_one_matrix():
    """TQ's d per block: one non-zero value and zero blocks of zero codes (kernel_formats.py)."""
    codes = np.ones((2, 512), np.int8)
    codes[1, 256:] = 0
    blob = matrix_of(codes, "tq2_0", beta=0.5).data.copy()
    assert kernel.PackedMatrix.from_bytes("tq2_0", blob, (2, 512)).beta == np.float32(0.5)
    zero_block = 3 * 66 + 64
    assert blob[zero_block: zero_block + 2].tobytes() == b"\0\0"
    other = blob.copy()
    other[64:66] = np.frombuffer(np.float16(0.25).tobytes(), np.uint8)
    with pytest.raises(NotTernary, match="2 different non-zero d values"):
        kernel.PackedMatrix.from_bytes("tq2_0", other, (2, 512))
    hidden = blob.copy()
    hidden[3 * 66] = 0x56  # a +1 code in the block whose d is 0
    with pytest.raises(FormatError, match="1 tq2_0 blocks with d = 0 hold non-zero codes"):
        kernel.PackedMatrix.from_bytes("tq2_0", hidden, (2, 512))
    with pytest.raises(FormatError, match="carry beta 0.5"):
        kernel.PackedMatrix("tq2_0", blob, (2, 512), np.float32(0.25))


@pytest.mark.parametrize("pattern", ["field3", "nibble>8", "nibble>13"])
def test_word_at_a_time_byte_checks_count_as_the_tables(pattern):
    """The C check reads 8 bytes at a time for these patterns: same counts as the tables."""
    if kernel._ext is None:
        pytest.skip("compiled backends only (BITNET_PACK_PUREPYTHON=1)")
    table = {"field3": kernel_formats.FIELD_IS_3, "nibble>8": kernel_formats.NIBBLE_ABOVE_8,
             "nibble>13": kernel_formats.NIBBLE_ABOVE_13}[pattern]
    rng = np.random.default_rng(51)
    data = rng.integers(0, 256, 4099, dtype=np.uint8)
    for offset, rows, length, stride in ((0, 1, 4099, 0), (3, 1, 4093, 0), (1, 40, 61, 100), (0, 60, 64, 66)):
        run = kernel_formats.ByteRun("x", offset, rows, length, stride, table, pattern)
        want = kernel_formats.count_run(run, data)
        assert want > 0
        assert kernel._ext.count_bad(data, offset, rows, length, stride, pattern, table) == want
        assert kernel._ext.count_bad(data, offset, rows, length, stride, "table", table) == want
