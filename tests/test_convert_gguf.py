"""GGUF out and back: I2_S for bitnet.cpp, TQ1_0/TQ2_0 for llama.cpp, against the peers."""
from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.containers.shards import SafetensorsDir
from bitnet_pack.families.arch import BITNET_2B4T
from bitnet_pack.pipeline.sources import load_weights

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tiny-bitnet"


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def convert(src: Path, out: Path, outtype: str, *extra: str) -> Path:
    code, _, err = run("convert", src, out, "--outtype", outtype, *extra)
    assert code == 0, err
    return out


def hparams(file: GGUFFile) -> dict[str, object]:
    """{arch}.* keys without the arch prefix; rope.scaling (linear, factor 1: a no-op that
    convert-hf-to-gguf-bitnet.py and llama.cpp's converter write, convert-ms does not) left out."""
    arch = file.architecture
    return {k[len(arch) + 1:]: file.get(k) for k in file.kv
            if k.startswith(arch + ".") and ".rope.scaling." not in k}


def test_i2s_from_master_equals_bitnet_cpps_official_route(tiny_a: Path, tmp_path: Path) -> None:
    ours = GGUFFile(convert(tiny_a / "tiny-a-bf16", tmp_path / "a.gguf", "i2_s", "--target", "bitnet.cpp"))
    peer = GGUFFile(tiny_a / "tiny-a-i2_s.gguf")
    assert ours.architecture == "bitnet-b1.58" and peer.architecture == "bitnet-25"
    assert set(ours.tensors) == set(peer.tensors)
    i2s = [n for n, t in peer.tensors.items() if t.type_name == "I2_S"]
    assert len(i2s) == 14
    for name in peer.tensors:
        mine, theirs = ours.tensors[name], peer.tensors[name]
        assert (mine.type_name, mine.shape) == (theirs.type_name, theirs.shape), name
        if name in i2s:
            codes_and_scale = theirs.nbytes - 28  # tail bytes 4..31: uninitialised in the peer
            assert np.array_equal(ours.tensor_bytes(name)[:codes_and_scale], peer.tensor_bytes(name)[:codes_and_scale])
            assert not ours.tensor_bytes(name)[codes_and_scale:].any()
        else:
            assert np.array_equal(ours.tensor_array(name), peer.tensor_array(name)), name
    assert hparams(ours) == hparams(peer)
    assert ours.get("general.file_type") == peer.get("general.file_type") == 40


def test_gguf_py_reads_our_tq_files_and_dequantizes_to_t_times_beta(tiny_a: Path, tmp_path: Path) -> None:
    _, packed = load_weights(tiny_a / "tiny-a-packed")
    for outtype, type_id in (("tq1_0", gguf.GGMLQuantizationType.TQ1_0), ("tq2_0", gguf.GGMLQuantizationType.TQ2_0)):
        path = convert(tiny_a / "tiny-a-packed", tmp_path / f"{outtype}.gguf", outtype)
        reader = gguf.GGUFReader(path)
        assert str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8") == "bitnet"
        seen = 0
        for tensor in reader.tensors:
            hf = next(n for n in packed if BITNET_2B4T.to_gguf(n) == tensor.name)
            if tensor.tensor_type == type_id:
                values = gguf.quants.dequantize(tensor.data, type_id).reshape(packed[hf].shape)
                assert np.array_equal(values, packed[hf].dequantize()), tensor.name
                seen += 1
        assert seen == 14


def test_mainline_target_writes_relu2_and_warns(tmp_path: Path) -> None:
    code, _, err = run("convert", FIXTURE, tmp_path / "m.gguf", "--outtype", "tq2_0", "--target", "llama.cpp")
    assert code == 0 and "SiLU" in err and err.count("SiLU") == 1
    f = GGUFFile(tmp_path / "m.gguf")
    assert f.architecture == "bitnet" and f.get("bitnet.hidden_activation") == "relu2"
    assert f.get("bitnet.rope.freq_base") == 500000.0
    assert f.get("tokenizer.ggml.model") == "gpt2" and f.get("tokenizer.ggml.pre") == "llama-bpe"
    assert "output.weight" not in f.tensors and f.tensors["token_embd.weight"].type_name == "F16"
    assert {t.type_name for n, t in f.tensors.items() if "norm" in n} == {"F32"}
    code, _, err = run("convert", FIXTURE, tmp_path / "x.gguf", "--outtype", "i2_s", "--target", "llama.cpp")
    assert code == 2 and "only in bitnet.cpp" in err


@pytest.mark.parametrize("outtype", ["i2_s", "i2_s_arm", "tq2_0", "tq1_0", "f16"])
def test_packed_through_gguf_and_back_is_byte_identical(outtype: str, tiny_a: Path, tmp_path: Path) -> None:
    gguf_path = convert(tiny_a / "tiny-a-packed", tmp_path / "m.gguf", outtype)
    back = convert(gguf_path, tmp_path / "back", "hf-packed")
    ours, theirs = SafetensorsDir(back), SafetensorsDir(tiny_a / "tiny-a-packed")
    assert set(ours.where) == set(theirs.where)
    for name in theirs.where:
        if name != "model.embed_tokens.weight":  # F16 in every GGUF: see the next test
            assert ours.raw(name).tobytes() == theirs.raw(name).tobytes(), name
    config = json.loads((back / "config.json").read_text())
    expected = json.loads((tiny_a / "tiny-a-packed" / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "rope_theta", "rms_norm_eps", "max_position_embeddings",
                "bos_token_id", "eos_token_id", "quantization_config", "tie_word_embeddings", "hidden_act"):
        assert config[key] == expected[key], key


def test_embedding_survives_f16_except_below_f16_normal_range(tiny_a: Path, tmp_path: Path) -> None:
    """The F16 token_embd (what llama-quantize writes) is exact for bf16 values in f16's normal
    range; the few below 2^-14 lose bits. This is the only lossy step on the GGUF round trip."""
    back = convert(convert(tiny_a / "tiny-a-packed", tmp_path / "m.gguf", "i2_s"), tmp_path / "back", "hf-packed")
    from bitnet_pack.formats.dtypes import bf16_to_f32

    ours = bf16_to_f32(SafetensorsDir(back).raw("model.embed_tokens.weight"))
    theirs = bf16_to_f32(SafetensorsDir(tiny_a / "tiny-a-packed").raw("model.embed_tokens.weight"))
    differ = ours != theirs
    assert np.all(np.abs(theirs[differ]) < 2.0**-14)
    assert differ.sum() < 0.001 * differ.size


def test_peer_i2s_file_converts_to_our_packed_checkpoint(tiny_a: Path, tmp_path: Path) -> None:
    """bitnet.cpp's own file carries fp32 betas; packed stores bf16, so the only difference
    from our direct bf16 -> packed conversion would be that rounding, and it is the same
    rounding: the projections and scales come out byte-identical."""
    back = convert(tiny_a / "tiny-a-i2_s.gguf", tmp_path / "back", "hf-packed")
    ours, theirs = SafetensorsDir(back), SafetensorsDir(tiny_a / "tiny-a-packed")
    for name in theirs.where:
        if "proj" in name or "norm" in name:
            assert ours.raw(name).tobytes() == theirs.raw(name).tobytes(), name


def test_official_file_repacks_for_mainline(tiny_a: Path, tmp_path: Path) -> None:
    out = convert(tiny_a / "tiny-a-i2_s.gguf", tmp_path / "mainline.gguf", "tq2_0", "--target", "llama.cpp")
    peer, ours = GGUFFile(tiny_a / "tiny-a-i2_s.gguf"), GGUFFile(out)
    assert ours.architecture == "bitnet"
    assert hparams(ours) == hparams(peer) | {"hidden_activation": "relu2"}
    assert ours.get("tokenizer.ggml.tokens") == peer.get("tokenizer.ggml.tokens")
    _, theirs = load_weights(tiny_a / "tiny-a-i2_s.gguf")
    _, mine = load_weights(out)
    for name, weight in theirs.items():
        if hasattr(weight, "codes"):
            assert np.array_equal(mine[name].codes, weight.codes)
            assert mine[name].beta == np.float32(np.float16(weight.beta))  # TQ's d is fp16
    reader = gguf.GGUFReader(out)
    assert len(reader.tensors) == len(peer.tensors)


def test_x86_and_arm_i2s_repack(tiny_a: Path, tmp_path: Path) -> None:
    arm = convert(tiny_a / "tiny-a-i2_s.gguf", tmp_path / "arm.gguf", "i2_s_arm")
    x86 = convert(arm, tmp_path / "x86.gguf", "i2_s")
    peer, back = GGUFFile(tiny_a / "tiny-a-i2_s.gguf"), GGUFFile(x86)
    assert GGUFFile(arm).get("bitnet_pack.layout") == "i2_s_arm"
    for name, info in peer.tensors.items():
        if info.type_name == "I2_S":
            keep = info.nbytes - 28
            assert np.array_equal(back.tensor_bytes(name)[:keep], peer.tensor_bytes(name)[:keep])
            assert not np.array_equal(GGUFFile(arm).tensor_bytes(name)[:keep], peer.tensor_bytes(name)[:keep])
