"""GGUF inputs as people have them: `token_embd` stored in a ggml block type (Q8_0, Q4_0,
Q4_K, Q6_K: what llama-quantize leaves), read through gguf-py's dequantizers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType, quants

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.containers.gguf_write import GGUFWriter
from bitnet_pack.containers.shards import SafetensorsDir
from bitnet_pack.errors import NotTernary
from bitnet_pack.formats import fastpath
from bitnet_pack.pipeline.sources import load_weights, open_checkpoint

EMBD, EMBD_HF = "token_embd.weight", "model.embed_tokens.weight"
# gguf-py quantizes none of the k-quants, so their test blocks are random bytes with sane f16
# scales put in: (block bytes, offsets of its f16 fields)
K_BLOCKS = {"Q4_K": (144, (0, 2)), "Q6_K": (210, (208,)), "Q5_K": (176, (0, 2))}


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def requantized(src: Path, out: Path, qtype: GGMLQuantizationType, names=(EMBD,),
                values: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of `src` whose tensors `names` are stored as `qtype` (quantized with gguf-py
    from their float values, or from `values`), everything else byte for byte."""
    values = values or {}
    with GGUFFile(src) as file:
        with GGUFWriter(out, alignment=file.alignment, types=file.types) as writer:
            for key, field in file.kv.items():
                writer.add_kv(key, field)
            blobs = {}
            for name, info in file.tensors.items():
                if name in names:
                    floats = values[name] if name in values else file.tensor_array(name)
                    blobs[name] = quantized(np.asarray(floats, np.float32), qtype)
                    writer.add_tensor(name, np.shape(floats), int(qtype))
                else:
                    blobs[name] = file.tensor_bytes(name)
                    writer.add_tensor(name, info.shape, info.type_id, info.nbytes)
            writer.write_header()
            for name in file.tensors:
                writer.write_tensor(name, blobs[name])
    return out


def quantized(floats: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    if qtype.name not in K_BLOCKS:
        return quants.quantize(floats, qtype)
    size, scale_offsets = K_BLOCKS[qtype.name]
    blocks = np.random.default_rng(int(qtype)).integers(0, 256, (floats.size // 256, size), dtype=np.uint8)
    for offset in scale_offsets:
        blocks[:, offset:offset + 2] = np.array([0.01], "<f2").view(np.uint8)
    return blocks.reshape(floats.shape[0], -1)


@pytest.fixture(scope="module")
def q8_gguf(tiny_a: Path, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("q8")
    return requantized(tiny_a / "tiny-a-i2_s.gguf", directory / "tiny-a-q8-embd.gguf", GGMLQuantizationType.Q8_0)


def file_dequantized(path: Path, name: str = EMBD) -> np.ndarray:
    with GGUFFile(path) as file:
        info = file.tensors[name]
        rows = file.tensor_bytes(name).reshape(info.shape[0], -1)
        return quants.dequantize(rows, GGMLQuantizationType[info.type_name])


def test_q8_0_embedding_converts_to_hf_packed_exactly(q8_gguf: Path, tmp_path: Path) -> None:
    expected = file_dequantized(q8_gguf)
    with GGUFFile(q8_gguf) as file:
        assert file.tensors[EMBD].type_name == "Q8_0"
    code, out, err = run("convert", q8_gguf, tmp_path / "packed", "--outtype", "hf-packed")
    assert code == 0, err
    assert "token_embd.weight is Q8_0 in the file" in err and "lossy" in err
    written = SafetensorsDir(tmp_path / "packed")
    try:
        assert written.info(EMBD_HF).dtype == "F32"
        assert written.raw(EMBD_HF).tobytes() == np.ascontiguousarray(expected, "<f4").tobytes()
    finally:
        written.close()


def test_q8_0_embedding_is_not_the_f16_one(tiny_a: Path, q8_gguf: Path) -> None:
    """The comparison above can fail: Q8_0 rounded the F16 embedding (the note is true)."""
    with GGUFFile(tiny_a / "tiny-a-i2_s.gguf") as file:
        f16 = file.tensor_array(EMBD).astype(np.float32)
    dequantized = file_dequantized(q8_gguf)
    assert dequantized.shape == f16.shape and not np.array_equal(dequantized, f16)
    assert np.max(np.abs(dequantized - f16)) < np.max(np.abs(f16)) / 100


def test_projections_and_other_tensors_unchanged(tiny_a: Path, q8_gguf: Path) -> None:
    _, ours = load_weights(q8_gguf)
    _, theirs = load_weights(tiny_a / "tiny-a-i2_s.gguf")
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        if name == EMBD_HF:
            assert np.array_equal(ours[name], file_dequantized(q8_gguf))
        elif isinstance(value, np.ndarray):
            assert np.array_equal(ours[name], value), name
        else:
            assert ours[name].same_as(value), name


@pytest.mark.parametrize("qtype", ["Q4_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"])
def test_other_block_types_read_through_gguf_py(tiny_a: Path, tmp_path: Path, qtype: str) -> None:
    path = requantized(tiny_a / "tiny-a-i2_s.gguf", tmp_path / f"{qtype}.gguf", GGMLQuantizationType[qtype])
    with open_checkpoint(path) as source:
        entry = next(e for e in source.entries() if e.name == EMBD_HF)
        assert (entry.kind, entry.dtype) == ("tensor", qtype)
        value = entry.load()
        expected = file_dequantized(path)
        assert np.isfinite(expected).all() and np.abs(expected).max() > 0
        assert value.dtype == "F32" and np.array_equal(value.data, expected)
        assert any(note.startswith(f"{EMBD} is {qtype} in the file") for note in source.notes)


def test_inspect_shows_the_block_type(q8_gguf: Path) -> None:
    code, out, err = run("inspect", q8_gguf)
    assert code == 0, err
    line = next(row for row in out.splitlines() if row.startswith(EMBD))  # the file's own names
    assert "Q8_0" in line
    assert "lossy" in out + err


def test_verify_and_generate_load_it(tiny_a: Path, q8_gguf: Path, tmp_path: Path) -> None:
    code, out, err = run("verify", q8_gguf, q8_gguf, "--ids", "1,15,27,300,42", "--tokens", "4")
    assert code == 0, err + out
    code, out, err = run("generate", q8_gguf, "--prompt", "Hello world", "--tokens", "4")
    assert code == 0, err + out
    # the rounding the note reports is real: against the F16 file the logits differ (--strict),
    # and they are identical once A's embedding takes ggml's Q8_0 rounding (the declared one)
    args = ("verify", tiny_a / "tiny-a-i2_s.gguf", q8_gguf, "--ids", "1,15,27,300,42", "--tokens", "2")
    code, out, err = run(*args, "--strict")
    assert code == 3, err + out
    code, out, err = run(*args)
    assert code == 0 and "after rounding embedding to Q8_0" in out, err + out


def test_q8_0_projection_of_ternary_values_reads_back_ternary(tiny_a: Path, tmp_path: Path) -> None:
    """t*beta quantized to Q8_0 (d = beta/127 in every block that holds a non-zero) is still
    ternary x one scale; a projection that is not is refused with the tensor named."""
    name = "blk.0.attn_q.weight"
    with open_checkpoint(tiny_a / "tiny-a-i2_s.gguf") as source:
        weight = next(e for e in source.entries() if e.name == "model.layers.0.self_attn.q_proj.weight").load()
    floats = weight.codes.astype(np.float32) * np.float32(1.0)  # beta 1: Q8_0's f16 d = 1/127 exactly
    path = requantized(tiny_a / "tiny-a-i2_s.gguf", tmp_path / "q.gguf", GGMLQuantizationType.Q8_0,
                       names=(name,), values={name: floats})
    with open_checkpoint(path) as source:
        entry = next(e for e in source.entries() if e.name == "model.layers.0.self_attn.q_proj.weight")
        read = entry.load()
        assert np.array_equal(read.codes, weight.codes)
    noisy = floats + np.linspace(0, 0.3, floats.size, dtype=np.float32).reshape(floats.shape)
    path = requantized(tiny_a / "tiny-a-i2_s.gguf", tmp_path / "n.gguf", GGMLQuantizationType.Q8_0,
                       names=(name,), values={name: noisy})
    with open_checkpoint(path) as source:
        entry = next(e for e in source.entries() if e.name == "model.layers.0.self_attn.q_proj.weight")
        with pytest.raises(NotTernary, match=name.replace(".", r"\.")):
            entry.load()


def test_dequantized_rows_stream_in_chunks(q8_gguf: Path) -> None:
    """A sink reads the embedding a few rows at a time, each chunk dequantized on its own."""
    with open_checkpoint(q8_gguf) as source:
        value = next(e for e in source.entries() if e.name == EMBD_HF).load()
        chunks = list(value.row_chunks(max_bytes=100 * 256 * 4))
        assert [len(c.data) for c in chunks] == [100] * 5 + [12]
        assert np.array_equal(np.concatenate([c.data for c in chunks]), file_dequantized(q8_gguf))
        assert np.array_equal(value.f32(), file_dequantized(q8_gguf))
        with fastpath.reference():  # the reference path takes tensors whole
            assert [len(c.data) for c in value.row_chunks(max_bytes=100 * 256 * 4)] == [512]


def test_streaming_holds_a_chunk_not_the_tensor(tiny_a: Path, tmp_path: Path) -> None:
    """Peak numpy allocation while a 60000x256 Q8_0 embedding (61 MB as f32) streams out in
    4 MB chunks stays well below one f32 copy of it (tracemalloc sees numpy's buffers)."""
    import tracemalloc

    values = np.random.default_rng(7).standard_normal((60000, 256), dtype=np.float32)
    path = requantized(tiny_a / "tiny-a-i2_s.gguf", tmp_path / "big.gguf", GGMLQuantizationType.Q8_0,
                       values={EMBD: values})
    whole_f32 = values.nbytes
    del values
    with open_checkpoint(path) as source:
        tensor = next(e for e in source.entries() if e.name == EMBD_HF).load()
        tracemalloc.start()
        try:
            rows = sum(len(chunk.data) for chunk in tensor.row_chunks(max_bytes=4 << 20))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert rows == 60000
    assert peak < whole_f32 / 4, f"peak {peak / 1e6:.1f} MB while streaming a {whole_f32 / 1e6:.0f} MB tensor"
