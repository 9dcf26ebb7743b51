"""The compiled conversion loops equal the numpy reference, byte for byte, and so do whole
streamed conversions; the O_DIRECT writers write exactly the bytes they are given."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet_pack.errors import NonFiniteWeight, NotTernary, ScaleNotRepresentable
from bitnet_pack.formats import fastpath
from bitnet_pack.formats.dtypes import bf16_to_f32, f32_to_bf16
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.formats.layouts.tq import QS_VALID
from bitnet_pack.formats.ternary import TernaryWeight, ternarize
from bitnet_pack.formats.torchsum import torch_sum
from bitnet_pack.pipeline.convert import convert
from bitnet_pack.pipeline.sinks.direct_io import open_direct, open_direct_file
from bitnet_pack.pipeline.sinks.factory import make_sink
from bitnet_pack.pipeline.sources import Tensor, open_checkpoint

PURE = os.environ.get("BITNET_PACK_PUREPYTHON", "") not in ("", "0")
LAYOUTS = ("i2_s", "i2_s_arm", "tq2_0", "tq1_0", "hf")
SIZES = [0, 1, 3, 7, 8, 9, 31, 32, 33, 255, 256, 257, 1000, 4097, 32767, 32768, 32769, 65536, 65537,
         100003, 262144, 300001, 1 << 20]


def test_the_extension_is_built_unless_pure_python_is_asked_for() -> None:
    assert (fastpath._ext is None) == PURE, "bitnet_pack.formats._fastconvert did not build"


def reference(function, *args, **kwargs):
    with fastpath.reference():
        return function(*args, **kwargs)


def bf16_weight(rng: np.random.Generator, shape: tuple[int, int], std: float) -> np.ndarray:
    return f32_to_bf16((std * rng.standard_normal(shape)).astype(np.float32))


def random_codes(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    codes = rng.integers(-1, 2, size=shape, dtype=np.int8)
    codes[rng.random(shape) < 0.3] = 0
    return codes


# -- torch's summation order -----------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_compiled_torch_sum_replays_the_reference_order(size: int) -> None:
    if not fastpath.compiled():
        pytest.skip("pure mode: fastpath.torch_sum is the reference itself (test_ternary.py checks that against torch)")
    values = np.random.default_rng(size).standard_normal(size).astype(np.float32)
    for threads in (1, 2, 3):
        assert fastpath.torch_sum(values, threads).tobytes() == torch_sum(values, threads).tobytes()
        flat = np.abs(values)
        assert fastpath.torch_sum(flat, threads).tobytes() == torch_sum(flat, threads).tobytes()


@pytest.mark.parametrize("size", [9, 100, 32769, 65536, 100003, 300001, 6912 * 2560])
def test_compiled_torch_sum_equals_torch_with_two_threads(size: int) -> None:
    values = np.abs(np.random.default_rng(size + 1).standard_normal(size).astype(np.float32))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = np.float32(torch.from_numpy(values).sum().item())
    finally:
        torch.set_num_threads(before)
    assert fastpath.torch_sum(values) == expected


@settings(deadline=None, max_examples=40)
@given(st.integers(0, 140_000), st.integers(0, 2**32 - 1))
def test_absmean_of_bf16_bits_equals_the_f32_reference(size: int, seed: int) -> None:
    if not fastpath.compiled():
        pytest.skip("compiled path only (BITNET_PACK_PUREPYTHON=1)")
    bits = f32_to_bf16(np.random.default_rng(seed).standard_normal(size).astype(np.float32))
    if size:
        total = fastpath._chunked_sum(bits, fastpath._ext.abs_sum_bf16, 2)
        assert total.tobytes() == torch_sum(np.abs(bf16_to_f32(bits))).tobytes()


# -- ternarization -------------------------------------------------------------------------
@settings(deadline=None, max_examples=60)
@given(st.integers(1, 70), st.integers(1, 700), st.floats(-9, 4), st.integers(0, 2**32 - 1), st.booleans())
def test_ternarize_stored_equals_ternarize(rows: int, cols: int, log_std: float, seed: int, sparse: bool) -> None:
    rng = np.random.default_rng(seed)
    bits = bf16_weight(rng, (rows, cols), 10.0 ** log_std)
    if sparse:
        bits[rng.random(bits.shape) < 0.7] = 0
    expected = ternarize(bf16_to_f32(bits))
    got = fastpath.ternarize_stored(bits, "BF16")
    assert got.same_as(expected)
    f32 = bf16_to_f32(bits) * np.float32(1.0 + 2.0 ** -20)  # uses the low mantissa bits too
    assert fastpath.ternarize_stored(f32, "F32").same_as(ternarize(f32))


def test_ternarize_stored_on_a_2b4t_sized_tensor() -> None:
    bits = bf16_weight(np.random.default_rng(7), (6912, 2560), 0.02)
    assert fastpath.ternarize_stored(bits, "BF16").same_as(ternarize(bf16_to_f32(bits)))


@pytest.mark.parametrize("scale", [1e-30, 3.0e-5, 0.7, 1.0, 2.0, 3.0, 17.5, 1e5, 3e38])
def test_threshold_codes_equal_rint_for_every_bf16_and_many_f32_values(scale: float) -> None:
    """The compiled pass compares stored bits with one threshold; numpy multiplies and rounds."""
    if not fastpath.compiled():
        pytest.skip("compiled path only (BITNET_PACK_PUREPYTHON=1)")
    every = np.arange(1 << 16, dtype=np.uint16)
    every = every[(every & 0x7FFF) <= 0x7F80]  # not NaN
    f32 = np.random.default_rng(9).integers(0, 1 << 32, size=1 << 20, dtype=np.uint32)
    f32 = f32[(f32 & 0x7FFFFFFF) <= 0x7F800000]
    s = np.float32(scale)
    for stored, values, kernel, threshold in (
            (every, bf16_to_f32(every), "ternarize_bf16", "ternary_threshold_bf16"),
            (f32, f32.view(np.float32), "ternarize_f32", "ternary_threshold_f32")):
        with np.errstate(over="ignore", invalid="ignore"):
            expected = np.clip(np.rint(values * s), -1, 1).astype(np.int8)
        codes = np.empty(stored.size, np.int8)
        getattr(fastpath._ext, kernel)(stored, getattr(fastpath._ext, threshold)(s), codes)
        assert np.array_equal(codes, expected)


def test_nonfinite_masters_raise_what_the_reference_raises() -> None:
    bits = bf16_weight(np.random.default_rng(1), (8, 64), 1.0)
    bits[3, 5] = 0x7FC0
    with pytest.raises(NonFiniteWeight, match=r"'w'.*1 NaN/Inf"):
        fastpath.ternarize_stored(bits, "BF16", tensor="w")
    huge = np.full((4, 8), np.float32(3e38))  # finite, but the sum overflows: beta would be Inf
    for ternarized in (lambda: fastpath.ternarize_stored(huge, "F32", tensor="w"), lambda: ternarize(huge, tensor="w")):
        with pytest.raises(NonFiniteWeight, match=r"'w'.*overflows float32 to inf"):
            ternarized()


# -- layouts ---------------------------------------------------------------------------------
SHAPES = [(1, 256), (5, 256), (7, 512), (64, 1024), (130, 768), (257, 2560)]


def sources(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, TernaryWeight]:
    """The same kind of weight as plain codes and as each stored form the fast path reads."""
    bits = bf16_weight(rng, shape, 0.02)
    master = fastpath.ternarize_stored(bits, "BF16")
    plain = TernaryWeight(np.array(master.codes), master.beta)
    found = {"plain": plain, "master": fastpath.ternarize_stored(bits, "BF16")}
    found["hf"] = get_layout("hf").decode(reference(get_layout("hf").encode, plain), shape, beta=plain.beta)
    found["i2_s"] = get_layout("i2_s").decode(reference(get_layout("i2_s").encode, plain), shape)
    return found


@pytest.mark.parametrize("shape", SHAPES)
def test_every_stored_form_encodes_every_layout_like_the_reference(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 7919 + shape[1])
    forms = sources(rng, shape)
    plain = forms["plain"]
    for name in LAYOUTS:
        layout = get_layout(name)
        beta_ok = TernaryWeight(plain.codes, np.float32(np.float16(plain.beta))) if name.startswith("tq") else plain
        expected = reference(layout.encode, beta_ok)
        for form, weight in forms.items():
            if name.startswith("tq"):
                weight = fastpath.StoredTernary(shape, beta_ok.beta, weight.rows, weight.origin) \
                    if isinstance(weight, fastpath.StoredTernary) else beta_ok
            assert np.array_equal(layout.encode(weight), expected), (name, form)
            assert weight.same_as(beta_ok), (name, form)


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_decoders_equal_the_reference(name: str, shape: tuple[int, int]) -> None:
    layout = get_layout(name)
    codes = random_codes(np.random.default_rng(shape[0] + 31 * shape[1]), shape)
    beta = np.float32(0.375)
    blob = reference(layout.encode, TernaryWeight(codes, beta))
    expected = reference(layout.decode, blob, shape, beta=beta)
    got = layout.decode(blob, shape, beta=beta)
    assert got.same_as(expected) and np.array_equal(got.codes, codes)


def test_all_zero_tq_blocks_and_all_zero_weights() -> None:
    codes = np.zeros((3, 512), np.int8)
    codes[1, 300] = -1
    for name in ("tq2_0", "tq1_0"):
        layout = get_layout(name)
        for weight in (TernaryWeight(codes, np.float32(0.5)), TernaryWeight(np.zeros((2, 256), np.int8), np.float32(2))):
            blob = layout.encode(weight)
            assert np.array_equal(blob, reference(layout.encode, weight))
            assert layout.decode(blob, weight.shape).same_as(reference(layout.decode, blob, weight.shape))


@pytest.mark.parametrize("name", LAYOUTS)
def test_invalid_input_raises_what_the_reference_raises(name: str) -> None:
    layout = get_layout(name)
    codes = random_codes(np.random.default_rng(3), (8, 512))
    bad = codes.copy()
    bad[2, 7] = 2
    with pytest.raises(NotTernary) as fast:
        layout.encode(TernaryWeight(bad, np.float32(0.5)))
    with pytest.raises(NotTernary) as slow:
        reference(layout.encode, TernaryWeight(bad, np.float32(0.5)))
    assert str(fast.value) == str(slow.value)
    blob = np.array(reference(layout.encode, TernaryWeight(codes, np.float32(0.5))))
    never_written = 0xFF if name != "tq1_0" else int(np.flatnonzero(~QS_VALID)[0])  # fields of 3 / no trits
    blob[(0 if name != "hf" else (1, 3))] = never_written
    with pytest.raises(NotTernary) as fast:
        layout.decode(blob, codes.shape, beta=np.float32(0.5))
    with pytest.raises(NotTernary) as slow:
        reference(layout.decode, blob, codes.shape, beta=np.float32(0.5))
    assert str(fast.value) == str(slow.value)


def test_tq_scale_rules_and_disagreeing_blocks_match_the_reference() -> None:
    layout = get_layout("tq2_0")
    weight = TernaryWeight(random_codes(np.random.default_rng(4), (4, 512)), np.float32(0.1))
    with pytest.raises(ScaleNotRepresentable):
        layout.encode(weight)
    assert np.array_equal(layout.encode(weight, lossy=True), reference(layout.encode, weight, lossy=True))
    blob = layout.encode(weight, lossy=True)
    blob[66 + 64] ^= 1  # the second block's d
    with pytest.raises(NotTernary) as fast:
        layout.decode(blob, weight.shape)
    with pytest.raises(NotTernary) as slow:
        reference(layout.decode, blob, weight.shape)
    assert str(fast.value) == str(slow.value)


def test_encoding_leaves_the_callers_codes_alone() -> None:
    codes = random_codes(np.random.default_rng(5), (9, 512))
    before = codes.copy()
    for name in LAYOUTS:
        get_layout(name).encode(TernaryWeight(codes, np.float32(0.5)))
    assert np.array_equal(codes, before)


# -- floats ----------------------------------------------------------------------------------
def torch_cast(bits: np.ndarray, source: torch.dtype, target: torch.dtype) -> np.ndarray:
    """16-bit storage cast by torch (round to nearest even): a reference independent of ours."""
    return torch.from_numpy(bits.view(np.int16)).view(source).to(target).view(torch.int16).numpy().view(np.uint16)


def every_16_bit_value(largest: int) -> np.ndarray:
    every = np.arange(1 << 16, dtype=np.uint16)
    return every[(every & 0x7FFF) <= largest]  # every value up to +-inf, no NaN


def test_bf16_to_f16_of_every_value_equals_torch() -> None:
    every = every_16_bit_value(0x7F80)
    expected = torch_cast(every, torch.bfloat16, torch.float16)
    with np.errstate(over="ignore"):  # numpy's cast in pure mode warns for values above 65504
        data, inexact = Tensor("BF16", every).converted("F16")  # the fast path, or numpy in pure mode
    assert data.dtype == np.float16 and data.view(np.uint16).tobytes() == expected.tobytes()
    assert inexact == int(np.count_nonzero(expected.view(np.float16).astype(np.float32) != bf16_to_f32(every)))
    nan = np.array([0x7FC1, 0x3F80], np.uint16)
    converted, _ = Tensor("BF16", nan).converted("F16")
    assert np.isnan(converted[0]) and converted[1] == 1.0
    if fastpath.compiled():
        assert fastpath.convert_float(nan, "BF16", "F16") is None  # NaN bits: the reference decides
        fast, flagged = fastpath.convert_float(every, "BF16", "F16")
        assert fast.view(np.uint16).tobytes() == expected.tobytes() and flagged == inexact


def test_f16_to_bf16_of_every_value_equals_torch() -> None:
    every = every_16_bit_value(0x7C00)
    expected = torch_cast(every, torch.float16, torch.bfloat16)
    data, inexact = Tensor("F16", every.view(np.float16)).converted("BF16")
    assert data.dtype == np.uint16 and data.tobytes() == expected.tobytes() and inexact == 0
    if fastpath.compiled():
        fast, _ = fastpath.convert_float(every.view(np.float16), "F16", "BF16")
        assert fast.tobytes() == expected.tobytes()


# -- memory-mapped inputs --------------------------------------------------------------------
def resident_kb() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_dropping_mapped_pages_frees_them_and_leaves_the_data(tmp_path: Path) -> None:
    import mmap

    data = np.random.default_rng(0).integers(0, 255, size=64 << 20, dtype=np.uint8)
    (tmp_path / "blob").write_bytes(data.tobytes())
    with open(tmp_path / "blob", "rb") as handle:
        mapped = np.frombuffer(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
    view = mapped[12345:]
    assert int(view[::4096].sum()) >= 0
    before = resident_kb()
    fastpath.drop_mapped_pages(view)
    assert before - resident_kb() > 50_000  # ~64 MB left this process
    assert np.array_equal(view[::997], data[12345::997])  # and come back on touch
    anonymous = data.copy()
    fastpath.drop_mapped_pages(anonymous)  # not a map: untouched
    assert np.array_equal(anonymous, data)


# -- direct I/O ---------------------------------------------------------------------------
def refuses_direct_io(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_DIRECT))
    except OSError:
        return True
    return False


def test_direct_writer_writes_scattered_pieces_exactly(tmp_path: Path) -> None:
    rng = random.Random(1)
    size = 3 * (8 << 20) + 12345
    expected = np.random.default_rng(2).integers(0, 255, size=size, dtype=np.uint8)
    cuts = sorted({0, size, *(rng.randrange(size) for _ in range(200)), *range(0, size, 5 << 20)})
    pieces = list(zip(cuts, cuts[1:], strict=False))
    rng.shuffle(pieces)
    path = tmp_path / "out.bin"
    path.write_bytes(b"")
    writer = open_direct(path)
    assert writer is not None or refuses_direct_io(path)
    if writer is None:
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    for begin, end in pieces:
        writer.write(expected[begin:end], begin)
    writer.close()
    assert path.read_bytes() == expected.tobytes()


def test_direct_file_continues_a_header_written_the_ordinary_way(tmp_path: Path) -> None:
    path = tmp_path / "out.gguf"
    head = bytes(range(256)) * 7 + b"xyz"
    path.write_bytes(head)
    direct = open_direct_file(path, len(head))
    assert direct is not None or refuses_direct_io(path)
    if direct is None:
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    body = np.random.default_rng(3).integers(0, 255, size=(8 << 20) + 4099, dtype=np.uint8)
    for start in range(0, body.size, 1_000_003):
        direct.write(body[start:start + 1_000_003])
    direct.flush()
    direct.close()
    assert path.read_bytes() == head + body.tobytes()


# -- whole conversions -------------------------------------------------------------------------
CONVERSIONS = [("tiny-a-bf16", "packed", "hf-packed"), ("tiny-a-bf16", "m.gguf", "i2_s"),
               ("tiny-a-bf16", "a.gguf", "i2_s_arm"), ("tiny-a-bf16", "t1.gguf", "tq1_0"),
               ("tiny-a-bf16", "b16", "bf16"), ("tiny-a-packed", "p.gguf", "i2_s"),
               ("tiny-a-packed", "t2.gguf", "tq2_0"), ("tiny-a-i2_s.gguf", "g", "hf-packed"),
               ("tiny-a-i2_s.gguf", "gt.gguf", "tq2_0"), ("tiny-a-i2_s.gguf", "f.gguf", "f16")]


def run_convert(src: Path, out: Path, outtype: str) -> dict[str, bytes]:
    with open_checkpoint(src) as source:
        convert(source, make_sink(out, outtype, force=True, inputs=[src]))
    files = sorted(out.rglob("*")) if out.is_dir() else [out]
    return {str(f.relative_to(out.parent)): f.read_bytes() for f in files if f.is_file()}


@pytest.mark.parametrize("src, out, outtype", CONVERSIONS)
def test_streamed_conversions_are_byte_identical_to_the_whole_tensor_reference(
        tiny_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, src: str, out: str, outtype: str) -> None:
    monkeypatch.setattr(fastpath, "CHUNK_BYTES", 3000)  # many row chunks even for tiny tensors
    monkeypatch.setattr(fastpath, "CHUNK_CODES", 700)
    monkeypatch.setattr(fastpath, "PARALLEL_MIN", 1000)  # and every hot loop on threads
    fast = run_convert(tiny_a / src, tmp_path / "fast" / out, outtype)
    (tmp_path / "slow").mkdir()
    with fastpath.reference():
        slow = run_convert(tiny_a / src, tmp_path / "slow" / out, outtype)
    assert {k.split("/", 1)[-1]: v for k, v in fast.items()} == {k.split("/", 1)[-1]: v for k, v in slow.items()}


def test_no_file_but_the_outputs_own_temporary_name_appears(tiny_a: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    seen: set[str] = set()
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    with open_checkpoint(tiny_a / "tiny-a-bf16") as source:
        sink = make_sink(out, "i2_s", inputs=[tiny_a / "tiny-a-bf16"])
        put = sink.put

        def watching_put(entry, value):
            seen.update(os.listdir(out.parent))
            put(entry, value)

        monkeypatch.setattr(sink, "put", watching_put)
        convert(source, sink)
    assert seen == {f".m.gguf.incomplete-{os.getpid()}"}
    assert os.listdir(out.parent) == ["m.gguf"] and not os.listdir(tmp_path / "tmp")
