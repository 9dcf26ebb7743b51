"""The three BitNet families (1bitLLM latent float, Llama-style packed with 1/beta, 2B4T) against
the peers' own files: every output layout converts to the same tensor bytes, GGUF -> the
family's checkpoint -> GGUF is lossless, verify agrees, and greedy ids match decode.json."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.containers.shards import SafetensorsDir
from bitnet_pack.engine.model import BitNetModel
from bitnet_pack.families.arch import BITNET_2B4T, LLAMA_BITNET, ONEBITLLM, family_of_config, permute_rows
from bitnet_pack.pipeline.sources import load_weights, open_checkpoint

FIXTURES = Path(__file__).parents[1] / "fixtures"
FAMILIES = {"1bitllm": ONEBITLLM, "llama3": LLAMA_BITNET, "falcon3": LLAMA_BITNET}
PEER_FILES = {"i2_s": ("i2_s", []), "tl2": ("tl2", []), "mainline-tq2_0": ("tq2_0", ["--target", "llama.cpp"])}


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def vectors(family: str) -> Path:
    return FIXTURES / f"fam-{family}"


def peer(family: str, kind: str) -> Path:
    return vectors(family) / f"fam-{family}-{kind}.gguf"


def kernel_config(family: str) -> Path:
    return vectors(family) / f"fam-{family}-tl2.kernel_config.ini"


def convert(src: Path, out: Path, outtype: str, *extra: object) -> Path:
    code, _, err = run("convert", src, out, "--outtype", outtype, *extra)
    assert code == 0, err
    return out


def read_options(family: str, kind: str) -> list[object]:
    return ["--kernel-config", kernel_config(family)] if kind == "tl2" else []


def same_tensor_data(ours: GGUFFile, theirs: GGUFFile) -> None:
    assert set(ours.tensors) == set(theirs.tensors)
    for name, info in theirs.tensors.items():
        mine = ours.tensors[name]
        assert (mine.type_name, mine.shape) == (info.type_name, info.shape), name
        a, b = ours.tensor_bytes(name), theirs.tensor_bytes(name)
        if info.type_name == "I2_S":  # tail bytes 4..31: uninitialised in the peer's file
            a, b = a[:info.nbytes - 28], b[:info.nbytes - 28]
        assert np.array_equal(a, b), name


@pytest.mark.parametrize("family", FAMILIES)
def test_fixture_checksums(family: str) -> None:
    for line in (vectors(family) / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((vectors(family) / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_recognised_from_config_and_gguf(family: str) -> None:
    config = json.loads((vectors(family) / f"fam-{family}-hf" / "config.json").read_text())
    assert family_of_config(config) is FAMILIES[family]
    for kind in PEER_FILES:
        with open_checkpoint(peer(family, kind), kernel_config=kernel_config(family)) as source:
            assert source.family is FAMILIES[family]
            assert f"family {FAMILIES[family].name}" in source.notes[0]
    assert family_of_config({"model_type": "bitnet", "architectures": ["BitNetForCausalLM"]}) is BITNET_2B4T


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", PEER_FILES)
def test_checkpoint_to_gguf_equals_the_peers_tensor_data(family: str, kind: str, tmp_path: Path) -> None:
    outtype, extra = PEER_FILES[kind]
    extra = extra + (["--kernel-config", kernel_config(family)] if kind == "tl2" else [])
    ours = convert(vectors(family) / f"fam-{family}-hf", tmp_path / "out.gguf", outtype, *extra)
    with GGUFFile(ours) as mine, GGUFFile(peer(family, kind)) as theirs:
        same_tensor_data(mine, theirs)
        assert mine.architecture == theirs.architecture == ("bitnet" if family == "1bitllm" else "llama")
        assert mine.get(f"{mine.architecture}.hidden_activation") is None
        for key in ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                    "attention.head_count_kv", "rope.freq_base"):
            assert mine.get(f"{mine.architecture}.{key}") == theirs.get(f"{theirs.architecture}.{key}"), key


def _f32_digests(family: str) -> dict:
    return json.loads((vectors(family) / f"fam-{family}-f32.digests.json").read_text())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", ["bitnet.cpp", "llama.cpp"])
def test_f32_output_equals_the_peers_f32_files(family: str, target: str, tmp_path: Path) -> None:
    """Byte for byte against the digests of the peers' f32 files (a 1bitLLM master's zero codes
    included: -0.0 where the latent weight was negative, as the peers' round(W*s)/s gives)."""
    digests = _f32_digests(family)["f32" if target == "bitnet.cpp" else "mainline-f32"]["tensors"]
    src = vectors(family) / f"fam-{family}-hf"
    ours = convert(src, tmp_path / "f32.gguf", "f32", "--target", target)  # F32 embedding without being told
    with GGUFFile(ours) as file:
        assert set(file.tensors) == set(digests)
        for name, info in file.tensors.items():
            assert [info.type_name, list(info.shape)] == [digests[name]["type"], digests[name]["shape"]], name
            assert hashlib.sha256(file.tensor_bytes(name).tobytes()).hexdigest() == digests[name]["sha256"], name


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", PEER_FILES)
def test_gguf_to_master_and_back_is_lossless(family: str, kind: str, tmp_path: Path) -> None:
    outtype, extra = PEER_FILES[kind]
    options = read_options(family, kind)
    master = convert(peer(family, kind), tmp_path / "master", "bf16", *options)
    assert family_of_config(json.loads((master / "config.json").read_text())) is FAMILIES[family]
    again = convert(master, tmp_path / "again.gguf", outtype, *extra, *options)
    with GGUFFile(again) as mine, GGUFFile(peer(family, kind)) as theirs:
        same_tensor_data(mine, theirs)
    code, out, err = run("verify", master, peer(family, kind), "--ids", "1,15,27,300,42", "--tokens", "3", *options)
    assert code == 0, out + err


@pytest.mark.parametrize("family", ["llama3", "falcon3"])
def test_llama_style_gguf_to_packed_gives_back_the_original_codes_and_inverse_scales(family: str,
                                                                                     tmp_path: Path) -> None:
    packed = convert(peer(family, "i2_s"), tmp_path / "packed", "hf-packed")
    config = json.loads((packed / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "linear_class" not in config["quantization_config"]
    ours, original = SafetensorsDir(packed), SafetensorsDir(vectors(family) / f"fam-{family}-hf")
    projections = [n for n in original.where if "_proj.weight" in n]
    assert len(projections) == 28  # 14 uint8 weights + 14 bf16 weight_scale = 1/beta
    for name in projections:
        assert np.array_equal(ours.raw(name), original.raw(name)), name
    again = convert(packed, tmp_path / "again.gguf", "i2_s")
    with GGUFFile(again) as mine, GGUFFile(peer(family, "i2_s")) as theirs:
        same_tensor_data(mine, theirs)
    code, out, err = run("verify", packed, peer(family, "i2_s"), "--ids", "1,15,27,300,42", "--tokens", "3")
    assert code == 0, out + err


@pytest.mark.parametrize("family, kind", [("1bitllm", "i2_s"), ("llama3", "mainline-tq2_0")])
def test_packed_checkpoint_that_must_round_a_scale_says_so(family: str, kind: str, tmp_path: Path) -> None:
    """fp32 betas (1bitLLM) or fp16 ones (TQ2_0) become a bf16 weight_scale: verify exits 0
    after exactly that declared rounding and names it; --strict exits 3 and names it, with
    every ternary code identical."""
    packed = tmp_path / "packed"
    code, _, err = run("convert", peer(family, kind), packed, "--outtype", "hf-packed")
    assert code == 0 and re.search(r"weight_scale is bf16: rounded 1[34] fp32 betas", err), err
    code, out, err = run("verify", packed, peer(family, kind), "--ids", "1,15,27,300,42", "--tokens", "2")
    assert code == 0, out + err
    # either side's rounding explains it: the bf16 weight_scale of the fp32 beta, or TQ2_0's fp16 of the bf16 one
    assert re.search(r"identical after rounding β to (bf16 \(hf weight_scale BF16|fp16 \(TQ2_0).* in 1[34] tensors", out), out
    code, out, err = run("verify", packed, peer(family, kind), "--ids", "1,15,27,300,42", "--tokens", "2", "--strict")
    assert code == 3
    assert "scale rounding only: ternary codes identical in all 14 projections" in out + err


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["i2_s", "tl2"])
def test_greedy_ids_reproduce_bitnet_cpp(family: str, kind: str) -> None:
    """bitnet.cpp's I2_S runs, and its TL2 runs (recorded on the 5-token prompt only)."""
    records = json.loads((vectors(family) / f"fam-{family}.decode.json").read_text())["prompts"]
    config, weights = load_weights(peer(family, kind), kernel_config=kernel_config(family))
    model = BitNetModel(config, weights, numerics="bitnet.cpp")
    checked = [r for r in records if kind in r]
    assert len(checked) == (2 if kind == "i2_s" else 1)
    for record in checked:
        assert model.generate_ids(record["prompt"], 16)[0] == record[kind]["ids"]


@pytest.mark.parametrize("family", ["llama3", "falcon3"])
def test_greedy_ids_reproduce_transformers(family: str) -> None:
    records = json.loads((vectors(family) / f"fam-{family}.decode.json").read_text())["prompts"]
    config, weights = load_weights(vectors(family) / f"fam-{family}-hf")
    model = BitNetModel(config, weights)
    assert model.config.hidden_act == "silu" and model.config.sub_norms is None
    assert not model.config.tie_word_embeddings
    for record in records:
        assert model.generate_ids(record["prompt"], 16)[0] == record["transformers_fp32"]["ids"]


def test_1bitllm_model_has_silu_sub_norms_and_a_tied_output() -> None:
    config, weights = load_weights(vectors("1bitllm") / "fam-1bitllm-hf")
    model = BitNetModel(config, weights)
    assert (model.config.hidden_act, model.config.tie_word_embeddings) == ("silu", True)
    assert model.config.sub_norms == ("self_attn.inner_attn_ln", "mlp.ffn_layernorm")
    assert model.lm_head is model.embedding


@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_and_dry_run_name_the_family(family: str, tmp_path: Path) -> None:
    src = vectors(family) / f"fam-{family}-hf"
    code, out, _ = run("inspect", src)
    assert code == 0 and f"family {FAMILIES[family].name}" in out
    code, out, err = run("convert", src, tmp_path / "x.gguf", "--outtype", "tq2_0", "--dry-run")
    assert code == 0 and f"family {FAMILIES[family].name}" in err + out
    assert "blk.0.attn_q.weight" in out and not (tmp_path / "x.gguf").exists()
    arch = FAMILIES[family].gguf_arch("llama.cpp")
    assert f"GGUF arch {arch!r} for llama.cpp" in err


def test_bitnet_cpp_arch_names_follow_the_family(tmp_path: Path) -> None:
    code, _, err = run("convert", vectors("llama3") / "fam-llama3-hf", tmp_path / "x.gguf", "--outtype", "i2_s",
                       "--arch", "bitnet-25")
    assert code == 2 and "llama" in err and not (tmp_path / "x.gguf").exists()


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3))
def test_qk_permute_is_undone_on_read(heads: int, half: int, cols: int) -> None:
    rows = np.arange(heads * 2 * half * cols).reshape(heads * 2 * half, cols)
    there = permute_rows(rows, heads, to_gguf=True)
    assert np.array_equal(permute_rows(there, heads, to_gguf=False), rows)
    # llama.cpp's order: each head's row j of the first half is followed by row j of the second
    assert np.array_equal(there[1], rows[half])


LOSSLESS = ("i2_s", "tl1", "tl2", "f32")
FP16_SCALE = ("tq1_0", "tq2_0", "f16", "bf16")  # beta (or t*beta) stored in 16 bits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("outtype", LOSSLESS + FP16_SCALE)
def test_every_outtype_converts_and_comes_back(family: str, outtype: str, tmp_path: Path) -> None:
    src = vectors(family) / f"fam-{family}-hf"
    target = "bitnet.cpp" if outtype in ("i2_s", "tl1", "tl2") else "llama.cpp"
    gguf = convert(src, tmp_path / "a.gguf", outtype, "--target", target, "--embedding-type", "f32")
    code, out, err = run("diff", src, gguf)
    assert code == 0, out + err  # exact, or equal after the GGUF's declared fp16 beta
    assert re.search(r"identical after rounding β to (fp16|bf16)", out) is not None or outtype in LOSSLESS, out
    assert "after rounding" not in out or outtype not in LOSSLESS, out
    if outtype not in LOSSLESS:
        code, out, err = run("diff", src, gguf, "--strict")
        assert code == 3 and "beta differs" in err and "codes differ" not in err, out + err
    master = convert(gguf, tmp_path / "master", "bf16")
    again = convert(master, tmp_path / "b.gguf", outtype, "--target", target, "--embedding-type", "f32")
    with GGUFFile(again) as mine, GGUFFile(gguf) as first:
        same_tensor_data(mine, first)
        assert mine.architecture == FAMILIES[family].gguf_arch(target)


@pytest.mark.parametrize("family", FAMILIES)
def test_roundtrip_command_passes_for_every_family(family: str) -> None:
    code, out, err = run("roundtrip", vectors(family) / f"fam-{family}-hf")
    assert code == 0, out + err
    assert "0 broken" in out


def test_llama_style_with_tied_output_writes_no_output_tensor(tmp_path: Path) -> None:
    """Falcon-E-like: the Llama-style format with tie_word_embeddings true and no lm_head."""
    from test_validation import drop, rewrite_safetensors

    src = tmp_path / "tied"
    shutil.copytree(vectors("falcon3") / "fam-falcon3-hf", src)
    rewrite_safetensors(src, drop("lm_head.weight"))
    config = json.loads((src / "config.json").read_text()) | {"tie_word_embeddings": True}
    (src / "config.json").write_text(json.dumps(config))
    gguf = convert(src, tmp_path / "t.gguf", "i2_s")
    with GGUFFile(gguf) as file:
        assert "output.weight" not in file.tensors and file.architecture == "llama"
    back = convert(gguf, tmp_path / "back", "hf-packed")
    assert json.loads((back / "config.json").read_text())["tie_word_embeddings"] is True
    assert "lm_head.weight" not in SafetensorsDir(back).where
    code, out, err = run("verify", src, gguf, "--ids", "1,15,27", "--tokens", "3")
    assert code == 0, out + err


def test_fp16_latent_1bitllm_master_converts_to_tl2(tmp_path: Path) -> None:
    """bitnet.cpp's converter stops on an fp16 1bitLLM master for TL2 (an fp16 scale meets an
    fp32 assertion); here it converts, with the codes absmean gives on the fp16 values."""
    from test_validation import rewrite_safetensors

    def to_f16(tensors: dict) -> None:
        for name, (_, shape, blob) in list(tensors.items()):
            tensors[name] = ("F16", shape, np.frombuffer(blob, np.float32).astype(np.float16).tobytes())

    src = tmp_path / "f16"
    shutil.copytree(vectors("1bitllm") / "fam-1bitllm-hf", src)
    rewrite_safetensors(src, to_f16)
    gguf = convert(src, tmp_path / "t.gguf", "tl2", "--kernel-config", kernel_config("1bitllm"))
    code, out, err = run("diff", src, gguf)
    assert code == 0, out + err


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", PEER_FILES)
def test_verify_of_the_original_checkpoint_against_each_peer_gguf(family: str, kind: str) -> None:
    """Exit 0, or 3 naming only rounding steps the GGUF took (its F16 embedding / output, TQ's
    fp16 beta): the ternary codes agree in every projection."""
    code, out, err = run("verify", vectors(family) / f"fam-{family}-hf", peer(family, kind), "--ids", "1,15,27,300,42",
                         "--tokens", "3", *read_options(family, kind))
    cause = next(line for line in out.splitlines() if line.startswith("cause: "))
    if code == 0:
        assert "bit-identical" in cause
        return
    assert code == 3 and "ternary codes differ" not in cause, out + err
    steps = [part.split(":")[0].split(" in ")[0] for part in cause.removeprefix("cause: ").split("; ")]
    assert set(steps) <= {"float tensors differ", "beta differs", "scale rounding only"}, cause
    if "float tensors differ" in cause:
        assert "model.embed_tokens.weight" in cause or "lm_head.weight" in cause


def test_untied_1bitllm_cannot_go_to_a_gguf_arch_without_output(tmp_path: Path) -> None:
    from test_validation import rewrite_safetensors

    def add_head(tensors: dict) -> None:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]

    src = tmp_path / "untied"
    shutil.copytree(vectors("1bitllm") / "fam-1bitllm-hf", src)
    rewrite_safetensors(src, add_head)
    config = json.loads((src / "config.json").read_text()) | {"tie_word_embeddings": False}
    (src / "config.json").write_text(json.dumps(config))
    for extra in ([], ["--dry-run"]):
        code, _, err = run("convert", src, tmp_path / "u.gguf", "--outtype", "i2_s", *extra)
        assert code == 1 and "'lm_head.weight': an untied output, which GGUF arch 'bitnet' has no place" in err
        assert err.count("Error: ") == 1 and err.splitlines()[-1].startswith("Error: ")  # after the notes
        assert not (tmp_path / "u.gguf").exists()
    convert(src, tmp_path / "packed", "hf-packed")  # a checkpoint can hold it
