"""BitNet embedding models (issue 17): GGUFs byte-identical to bitnet.cpp's embedding converter.

The peers' bytes: fixtures/emb-gemma3 (the i2_s file copied; the f32/f16 files by SHA-256) and
../shared/vectors/emb-qwen3 (the i2_s file itself; f32/f16 by the SHA-256 its logs record)."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bitnet_pack import api
from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.containers.shards import SafetensorsDir
from bitnet_pack.errors import UsageError
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.pipeline.sources.embedding import open_embedding

GEMMA = FIXTURES / "emb-gemma3"


def digests(model: str) -> dict:
    return json.loads((FIXTURES / model / f"{model}.digests.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(src: Path, out: Path, outtype: str, *extra: str) -> Path:
    result = CliRunner().invoke(main, ["convert", str(src), str(out), "--outtype", outtype, *extra])
    assert result.exit_code == 0, result.output
    return out


def tensor_digests(path: Path) -> dict:
    with GGUFFile(path, flavour="2025") as file:
        return {name: hashlib.sha256(file.tensor_bytes(name).tobytes()).hexdigest() for name in file.tensors}


@pytest.fixture(scope="module")
def qwen_hf(shared_vectors: Path, tmp_path_factory) -> Path:
    return shared_vectors / "emb-qwen3" / "hf"


@pytest.mark.parametrize("outtype", ["f32", "f16", "i2_s"])
def test_gemma3_gguf_is_the_converters_file(tmp_path: Path, outtype: str) -> None:
    # the model folder is named like the peer's ("hf"): general.name is the folder name
    out = convert(GEMMA / "hf", tmp_path / f"{outtype}.gguf", outtype)
    expected = digests("emb-gemma3")[outtype]
    assert tensor_digests(out) == {n: t["sha256"] for n, t in expected["tensors"].items()}
    assert sha256(out) == expected["sha256"]
    if outtype == "i2_s":
        assert out.read_bytes() == (GEMMA / "emb-gemma3-i2_s.gguf").read_bytes()


@pytest.mark.parametrize("outtype", ["f32", "f16", "i2_s"])
def test_qwen3_gguf_is_the_converters_file(qwen_hf: Path, tmp_path: Path, outtype: str) -> None:
    out = convert(qwen_hf, tmp_path / f"{outtype}.gguf", outtype)
    assert sha256(out) == digests("emb-qwen3")[outtype]["sha256"]
    if outtype == "i2_s":
        assert out.read_bytes() == (qwen_hf.parent / "emb-qwen3-i2_s.gguf").read_bytes()


@pytest.mark.parametrize("model", ["emb-gemma3", "emb-qwen3"])
def test_numpy2_rule_gives_the_numpy2_converters_file(shared_vectors: Path, tmp_path: Path, model: str) -> None:
    out = convert(shared_vectors / model / "hf", tmp_path / "np2.gguf", "i2_s", "--beta-rule", "numpy2")
    assert sha256(out) == digests(model)["i2_s_numpy2"]["sha256"]


def test_exact_rule_changes_only_betas_to_the_exact_mean(tmp_path: Path) -> None:
    out = convert(GEMMA / "hf", tmp_path / "exact.gguf", "i2_s", "--beta-rule", "exact")
    with open_embedding(GEMMA / "hf") as hf, GGUFFile(out, flavour="2025") as ours, \
            GGUFFile(GEMMA / "emb-gemma3-i2_s.gguf", flavour="2025") as peer:
        changed = 0
        for tensor in (t for t in hf.tensors if t.kind == "linear"):
            shape = ours.tensors[tensor.gguf].shape
            mine, theirs = (get_layout("i2_s").decode(f.tensor_bytes(tensor.gguf), shape) for f in (ours, peer))
            assert np.array_equal(mine.codes, theirs.codes), tensor.gguf  # no code moves here (README)
            exact = np.float32(np.abs(tensor.load().astype(np.float64)).mean())
            assert mine.beta == exact, tensor.gguf
            changed += mine.beta != theirs.beta
        assert changed == 3  # the README's table: 3 of 14 scales are not the exact mean


def test_gguf_sources_convert_to_the_converters_files(tmp_path: Path, shared_vectors: Path) -> None:
    peer = shared_vectors / "emb-gemma3"
    assert convert(peer / "emb-gemma3-f32.gguf", tmp_path / "a.gguf", "i2_s").read_bytes() == \
        (peer / "emb-gemma3-i2_s.gguf").read_bytes()
    assert convert(peer / "emb-gemma3-f32.gguf", tmp_path / "b.gguf", "f16").read_bytes() == \
        (peer / "emb-gemma3-f16.gguf").read_bytes()
    assert convert(GEMMA / "emb-gemma3-i2_s.gguf", tmp_path / "c.gguf", "i2_s").read_bytes() == \
        (GEMMA / "emb-gemma3-i2_s.gguf").read_bytes()


def test_float_type_f32_keeps_norms_and_embedding(tmp_path: Path) -> None:
    out = convert(GEMMA / "hf", tmp_path / "f.gguf", "i2_s", "--float-type", "f32")
    with GGUFFile(out, flavour="2025") as file, open_embedding(GEMMA / "hf") as hf:
        for tensor in hf.tensors:
            info = file.tensors[tensor.gguf]
            assert info.type_name == ("I2_S" if tensor.kind == "linear" else "F32")
            if tensor.kind != "linear":  # 1 + w exactly as the f32 file holds it
                assert np.array_equal(file.tensor_bytes(tensor.gguf).view("<f4").reshape(info.shape), tensor.load())


def test_gguf_to_transformers_and_back(tmp_path: Path, shared_vectors: Path) -> None:
    peer = shared_vectors / "emb-gemma3"
    back = convert(convert(peer / "emb-gemma3-f32.gguf", tmp_path / "hf", "bf16"), tmp_path / "hf.gguf", "f32",
                   "--name", "hf")
    assert tensor_digests(back) == tensor_digests(peer / "emb-gemma3-f32.gguf")  # every tensor, exactly
    with GGUFFile(back, flavour="2025") as mine, GGUFFile(peer / "emb-gemma3-f32.gguf", flavour="2025") as theirs:
        plain = [k for k in theirs.kv if not k.startswith("tokenizer.")]
        assert [(k, mine.get(k)) for k in plain] == [(k, theirs.get(k)) for k in plain]
    # against the original checkpoint only the Gemma norm value lost in 1 + w differs (1e-8 -> 0)
    original, written = SafetensorsDir(GEMMA / "hf"), SafetensorsDir(tmp_path / "hf")
    differ = {n: int(np.count_nonzero(original.raw(n) != written.raw(n))) for n in original.where}
    assert {n: c for n, c in differ.items() if c} == {"model.layers.0.post_feedforward_layernorm.weight": 1}
    packed = convert(convert(GEMMA / "emb-gemma3-i2_s.gguf", tmp_path / "hf2", "bf16"), tmp_path / "b.gguf", "i2_s")
    with GGUFFile(packed, flavour="2025") as mine, GGUFFile(GEMMA / "emb-gemma3-i2_s.gguf", flavour="2025") as peer_file:
        for name, info in peer_file.tensors.items():
            if info.type_name == "I2_S":
                a, b = (get_layout("i2_s").decode(f.tensor_bytes(name), info.shape) for f in (mine, peer_file))
                assert np.array_equal(a.codes, b.codes), name
                assert abs(float(a.beta) / float(b.beta) - 1) <= 2**-8, name  # beta/density rounded to bf16
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["head_dim"] == 256
    pooling = json.loads((tmp_path / "hf" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_lasttoken"] and not pooling["pooling_mode_mean_tokens"]


@pytest.mark.parametrize(("outtype", "out", "said"), [
    ("tl2", "x.gguf", "per-projection norms"), ("tq2_0", "x.gguf", "mainline llama.cpp"),
    ("i2_s_arm", "x.gguf", "I2_S \\(x86 blocks\\)"), ("i2_s", "dir", "needs a .gguf OUT")])
def test_refused_directions_say_why(tmp_path: Path, outtype: str, out: str, said: str) -> None:
    with pytest.raises(UsageError, match=said):
        api.convert(GEMMA / "hf", tmp_path / out, outtype=outtype)


def test_embedding_options_are_refused_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--beta-rule applies to --outtype i2_s"):
        api.convert(GEMMA / "hf", tmp_path / "x.gguf", outtype="f16", beta_rule="exact")
    with pytest.raises(UsageError, match="BitNet embedding models"):
        api.convert(FIXTURES / "tiny-bitnet", tmp_path / "y.gguf", outtype="i2_s", beta_rule="exact")
    with pytest.raises(UsageError, match="does not apply"):
        api.convert(GEMMA / "hf", tmp_path / "z.gguf", outtype="i2_s", embedding_type="f32")
    with pytest.raises(UsageError, match="--scale-dtype applies to --outtype hf-packed"):
        api.convert(GEMMA / "hf", tmp_path / "w", outtype="bf16", scale_dtype="bf16")


def test_fixture_checksums_hold_and_are_the_shared_sets(shared_vectors: Path) -> None:
    from test_fixtures import assert_checksums_hold, read_sums

    for model in ("emb-gemma3", "emb-qwen3"):
        assert_checksums_hold(FIXTURES / model)
    shared, local = read_sums(shared_vectors / "emb-gemma3" / "SHA256SUMS"), read_sums(GEMMA / "SHA256SUMS")
    copied = {name: digest for name, digest in local.items() if not name.endswith(".digests.json")}
    assert copied and {name: shared.get(name) for name in copied} == copied


def test_digests_are_what_make_emb_digests_writes(shared_vectors: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_emb_digests", FIXTURES / "make_emb_digests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.digests(shared_vectors / "emb-gemma3" / "emb-gemma3-f16.gguf") == digests("emb-gemma3")["f16"]


def test_dry_run_plans_what_is_written(tmp_path: Path) -> None:
    report = api.convert(GEMMA / "hf", tmp_path / "x.gguf", outtype="i2_s", dry_run=True)
    assert not (tmp_path / "x.gguf").exists()
    with GGUFFile(GEMMA / "emb-gemma3-i2_s.gguf", flavour="2025") as peer:
        assert [(p.name, p.kind, p.shape, p.nbytes) for p in report.planned] == \
            [(n, t.type_name, t.shape, t.nbytes) for n, t in peer.tensors.items()]


def random_gemma(directory: Path, seed: int, zero_share: float) -> Path:
    """emb-gemma3's files with new random bf16 weights (some projections partly or all zero)."""
    from bitnet_pack.containers.safetensors import SafetensorsWriter, TensorPlan
    from bitnet_pack.families.arch import EMB_GEMMA3
    from bitnet_pack.formats.dtypes import f32_to_bf16

    shutil.copytree(GEMMA / "hf", directory)
    (directory / "model.safetensors").unlink()
    config = json.loads((directory / "config.json").read_text())
    shapes = EMB_GEMMA3.tensor_shapes(config)
    rng = np.random.default_rng(seed)
    writer = SafetensorsWriter(directory / "model.safetensors", [TensorPlan(n, "BF16", s) for n, s in shapes.items()],
                               {"format": "pt"})
    for name, shape in shapes.items():
        values = (rng.standard_normal(shape) * rng.uniform(0.01, 0.5)).astype(np.float32)
        values[rng.random(shape) < zero_share] = 0
        writer.write(name, f32_to_bf16(values.reshape(-1)).reshape(shape))
    writer.finish()
    return directory


@settings(max_examples=3, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.3, 1.0]))
@example(7, 1.0)  # every projection all zero: beta's 1e-5 floor through every direction
def test_every_direction_round_trips_on_random_weights(seed: int, zero_share: float) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        hf = random_gemma(tmp / "hf", seed, zero_share)
        direct = convert(hf, tmp / "a.gguf", "i2_s")
        packed = convert(hf, tmp / "packed", "hf-packed")
        assert convert(packed, tmp / "b.gguf", "i2_s", "--name", "hf").read_bytes() == direct.read_bytes()
        again = convert(convert(direct, tmp / "packed2", "hf-packed"), tmp / "c.gguf", "i2_s", "--name", "hf")
        assert tensor_digests(again) == tensor_digests(direct)  # (its tokenizer is rebuilt from the GGUF keys)
        f32 = convert(hf, tmp / "f.gguf", "f32")
        back = convert(convert(f32, tmp / "hf2", "bf16"), tmp / "g.gguf", "f32", "--name", "hf")
        assert tensor_digests(back) == tensor_digests(f32)
