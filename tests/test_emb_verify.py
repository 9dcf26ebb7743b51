"""BitNet embedding models (issue 17): verify by pooled embeddings, from each side's own bytes.

The encoder is checked against an independent torch implementation of the READMEs' forward
pass (tests/emb_torch_reference.py), against itself on the numpy backend, and through the CLI:
a checkpoint and its I2_S conversion give bit-identical embeddings, one flipped code does not."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURES
from emb_torch_reference import TorchEncoder

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.engine import floatops, kernel
from bitnet_pack.engine.encoder import Encoder
from bitnet_pack.formats import floatmath
from bitnet_pack.pipeline.sources.embedding import open_embedding, read_pooling

GEMMA = FIXTURES / "emb-gemma3"
PROMPTS = ([2, 340, 359, 276, 319, 292, 352, 368, 428, 406, 277, 1], [7], list(range(3, 300, 11)))


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def models(shared_vectors: Path) -> dict[str, Path]:
    return {"emb-gemma3": GEMMA / "hf", "emb-qwen3": shared_vectors / "emb-qwen3" / "hf"}


@pytest.fixture(scope="module")
def qwen_i2s(models: dict[str, Path], tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb") / "qwen-i2_s.gguf"
    assert run("convert", models["emb-qwen3"], out, "--outtype", "i2_s").exit_code == 0
    return out


def flip_one_code(src: Path, dst: Path, tensor: str) -> None:
    """Copy src to dst with the first code of `tensor` moved to another valid code."""
    shutil.copyfile(src, dst)
    with GGUFFile(dst, flavour="2025") as file:
        offset = file.tensors[tensor].abs_offset
    data = bytearray(dst.read_bytes())
    code = data[offset] >> 6
    data[offset] = (data[offset] & 0x3F) | ((0 if code else 2) << 6)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("model", ["emb-gemma3", "emb-qwen3"])
def test_encoder_agrees_with_an_independent_torch_encoder(models: dict[str, Path], model: str) -> None:
    reference = TorchEncoder(models[model])
    with open_embedding(models[model]) as source:
        encoder = Encoder(source)
    for ids in PROMPTS:
        ours, theirs = encoder.embed(ids), reference.embed(ids).numpy()
        assert np.max(np.abs(ours - theirs)) < 1e-6, ids
        assert float(ours.astype(np.float64) @ theirs) > 1 - 1e-6


def test_numpy_backend_gives_the_same_bits(models: dict[str, Path]) -> None:
    with open_embedding(GEMMA / "emb-gemma3-i2_s.gguf") as source:
        encoder = Encoder(source)
    compiled = encoder.embed(PROMPTS[0])
    with kernel.use_backend("numpy"):
        assert np.array_equal(encoder.embed(PROMPTS[0]).view(np.uint32), compiled.view(np.uint32))


def test_gelu_tanh_is_torchs_to_rounding() -> None:
    x = np.concatenate([np.linspace(-12, 12, 20001, dtype=np.float32), np.float32([0, -0.0, 1e-30, -50, 50])])
    ours = floatmath.gelu_tanh(x)
    theirs = torch.nn.functional.gelu(torch.from_numpy(x).double(), approximate="tanh").numpy()
    assert np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-6)) < 2e-7


@pytest.mark.parametrize("shape", [(1,), (7, 3), (5, 1031), (0, 4)])
def test_gelu_tanh_c_is_the_numpy_reference(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    gate = (rng.standard_normal(shape) * 20).astype(np.float32)
    gate.reshape(-1)[:4] = np.float32([0, -0.0, 3e38, -3e38])[: gate.size]
    up = rng.standard_normal(shape).astype(np.float32)
    compiled = floatops.gelu_tanh_mul(gate, up)
    with kernel.use_backend("numpy"):
        reference = floatops.gelu_tanh_mul(gate, up)
    assert np.array_equal(compiled.view(np.uint32), reference.view(np.uint32))
    assert np.array_equal(reference.view(np.uint32), (floatmath.gelu_tanh(gate) * up).view(np.uint32))


def test_verify_checkpoint_against_its_i2s_file_is_bit_identical(models: dict[str, Path], qwen_i2s: Path) -> None:
    for b in (qwen_i2s, models["emb-qwen3"].parent / "emb-qwen3-i2_s.gguf"):
        result = run("verify", models["emb-qwen3"], b)
        assert result.exit_code == 0, result.output
        assert "identical embeddings (bit for bit)" in result.output


def test_gemma3_f16_norms_differ_and_f32_ones_do_not(tmp_path: Path) -> None:
    result = run("verify", GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf")  # F16 norms: a declared rounding
    assert result.exit_code == 0 and "after rounding" in result.output and "norms to F16" in result.output
    result = run("verify", GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf", "--strict")
    assert result.exit_code == 3
    assert "blk.0.attn_norm.weight" in result.output and "cosine" in result.output  # the F16-rounded 1 + w
    kept = tmp_path / "f32-floats.gguf"
    assert run("convert", GEMMA / "hf", kept, "--outtype", "i2_s", "--float-type", "f32").exit_code == 0
    assert run("verify", GEMMA / "hf", kept).exit_code == 0


@pytest.mark.parametrize("tensor", ["blk.1.ffn_up.weight", "blk.0.attn_q.weight"])
def test_a_flipped_code_fails_and_is_named(models: dict[str, Path], qwen_i2s: Path, tmp_path: Path,
                                           tensor: str) -> None:
    flipped = tmp_path / "flipped.gguf"
    flip_one_code(qwen_i2s, flipped, tensor)
    result = run("verify", models["emb-qwen3"], flipped, "--json")
    assert result.exit_code == 3, result.output
    report, _ = json.JSONDecoder().raw_decode(result.output)  # then the Error: line naming the tensors
    assert report["differing_tensors"] == [f"{tensor}: 1 codes differ"]
    assert not report["ok"] and min(r["cosine"] for r in report["rows"]) < 1
    assert tensor in result.output.splitlines()[-1]


def test_record_and_against(models: dict[str, Path], qwen_i2s: Path, tmp_path: Path) -> None:
    trace = tmp_path / "qwen.npz"
    recorded = run("verify", models["emb-qwen3"], "--record", trace, "--ids", "128000,9906,1917;128000,15")
    assert recorded.exit_code == 0, recorded.output
    assert run("verify", qwen_i2s, "--against", trace).exit_code == 0
    flipped = tmp_path / "flipped.gguf"
    flip_one_code(qwen_i2s, flipped, "blk.0.ffn_down.weight")
    assert run("verify", flipped, "--against", trace).exit_code == 3
    with np.load(trace) as data:
        assert data["embeddings"].shape == (2, 128) and data["lengths"].tolist() == [3, 2]


def test_pooling_follows_the_converters_rules(tmp_path: Path) -> None:
    assert read_pooling(tmp_path)[0] == 1  # no modules.json: MEAN
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "x.Pooling", "path": "p"}]))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True,
                                                             "pooling_mode_cls_token": True}))
    assert read_pooling(tmp_path)[0] == 2  # cls is tested before last-token
    assert read_pooling(GEMMA / "hf")[0] == 3


def test_diff_compares_runtime_values(tmp_path: Path) -> None:
    kept = tmp_path / "kept.gguf"
    assert run("convert", GEMMA / "hf", kept, "--outtype", "i2_s", "--float-type", "f32").exit_code == 0
    same = run("diff", GEMMA / "hf", kept)
    assert same.exit_code == 0, same.output  # codes, beta bits, 1 + w and the embedding all equal
    rounded = run("diff", GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf")
    assert rounded.exit_code == 0 and "norms to F16 (I2_S GGUF)" in rounded.output  # declared: F16 norms
    differ = run("diff", GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf", "--json", "--strict")
    assert differ.exit_code == 3
    report, _ = json.JSONDecoder().raw_decode(differ.output)
    changed = {t["name"] for t in report["differing"]}
    assert "blk.0.post_ffw_norm.weight" in changed and not any(n.endswith("_in.weight") for n in changed)
    assert all(t["kind"] == "float" for t in report["differing"])  # codes and betas equal: F16 norms only


@pytest.mark.parametrize("command", [("roundtrip",), ("generate", "--prompt", "hi")])
def test_lm_commands_refuse_an_embedding_model(command: tuple[str, ...]) -> None:
    result = run(command[0], GEMMA / "hf", *command[1:])
    assert result.exit_code == 2 and "BitNet embedding model" in result.output


def test_the_library_verify_runs_the_encoder_for_embedding_models(tmp_path: Path) -> None:
    """`bitnet_pack.verify` takes embedding models as the command does: pooled embeddings, the
    declared F16-norm rounding named, `strict` without it, and a flipped code found."""
    import bitnet_pack

    report = bitnet_pack.verify(GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf", ids=[[5, 9, 14], [3]])
    assert report.ok and "norms to F16" in report.rounded and len(report.rows) == 2
    assert not bitnet_pack.verify(GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf", ids=[5, 9, 14], strict=True).ok
    broken = tmp_path / "broken.gguf"
    flip_one_code(GEMMA / "emb-gemma3-i2_s.gguf", broken, "blk.0.attn_q.weight")
    flipped = bitnet_pack.verify(GEMMA / "hf", broken, ids=[5, 9, 14])
    assert not flipped.ok and any("attn_q" in name or "q_proj" in name for name in flipped.differing_tensors)
