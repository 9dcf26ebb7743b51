"""bf16 master <-> packed safetensors: byte-exact against transformers' own packing."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bitnet_pack.cli.main import main
from bitnet_pack.containers.safetensors import SafetensorsFile
from bitnet_pack.containers.shards import SafetensorsDir
from bitnet_pack.errors import OutputExists, UnknownArchitecture
from bitnet_pack.pipeline.convert import convert
from bitnet_pack.pipeline.sinks.hf import HFSink
from bitnet_pack.pipeline.sources import load_weights, open_checkpoint


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def tensors_of(directory: Path) -> dict[str, tuple[str, tuple, bytes]]:
    d = SafetensorsDir(directory)
    return {n: (i.dtype, i.shape, d.raw(n).tobytes()) for n, (f, i) in d.where.items()}


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_bf16_to_packed_equals_transformers_packing(tiny_a: Path, tmp_path: Path) -> None:
    before = digest(tiny_a / "tiny-a-bf16")
    code, out, err = run("convert", tiny_a / "tiny-a-bf16", tmp_path / "packed", "--outtype", "hf-packed")
    assert code == 0, err
    assert "wrote" in out and "ternarized by absmean" in err
    ours, theirs = tensors_of(tmp_path / "packed"), tensors_of(tiny_a / "tiny-a-packed")
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert ours[name] == theirs[name], name  # dtype, shape and every byte
    config = json.loads((tmp_path / "packed" / "config.json").read_text())
    expected = json.loads((tiny_a / "tiny-a-packed" / "config.json").read_text())
    assert config["quantization_config"] == expected["quantization_config"] == {
        "quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}
    assert config == expected
    for aux in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "packed" / aux).read_bytes() == (tiny_a / "tiny-a-bf16" / aux).read_bytes()
    assert digest(tiny_a / "tiny-a-bf16") == before  # the input is never modified


def test_packed_to_bf16_to_packed_is_byte_identical(tiny_a: Path, tmp_path: Path) -> None:
    assert run("convert", tiny_a / "tiny-a-packed", tmp_path / "bf16", "--outtype", "bf16")[0] == 0
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["quantization_config"]["quantization_mode"] == "online"
    assert run("convert", tmp_path / "bf16", tmp_path / "packed", "--outtype", "hf-packed")[0] == 0
    assert tensors_of(tmp_path / "packed") == tensors_of(tiny_a / "tiny-a-packed")


def test_master_from_packed_ternarizes_back_without_its_metadata(tiny_a: Path, tmp_path: Path) -> None:
    """Even a reader that ignores our recorded betas (transformers) recovers the codes, and a
    beta within the bf16 rounding of the per-tensor magnitude."""
    with open_checkpoint(tiny_a / "tiny-a-packed") as src:
        convert(src, HFSink(tmp_path / "bf16", "bf16"))
    _, packed = load_weights(tiny_a / "tiny-a-packed")
    master = SafetensorsDir(tmp_path / "bf16")
    from bitnet_pack.formats.dtypes import bf16_to_f32
    from bitnet_pack.formats.ternary import ternarize

    for name, weight in packed.items():
        if hasattr(weight, "codes"):
            plain = ternarize(bf16_to_f32(master.raw(name)))
            assert np.array_equal(plain.codes, weight.codes), name
            assert abs(plain.beta / weight.beta - 1) < 2**-8, name


def test_sharded_output_reads_back_identically(tiny_a: Path, tmp_path: Path) -> None:
    code, _, err = run("convert", tiny_a / "tiny-a-bf16", tmp_path / "sharded", "--outtype", "hf-packed",
                       "--max-shard-size", "200K")
    assert code == 0, err
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert tensors_of(tmp_path / "sharded") == tensors_of(tiny_a / "tiny-a-packed")


def test_bitlinear_flavour_divides_by_weight_scale(tiny_a: Path, tmp_path: Path) -> None:
    src = tmp_path / "bitlinear"
    src.mkdir()
    config = json.loads((tiny_a / "tiny-a-packed" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitnet"}  # linear_class defaults to bitlinear
    (src / "config.json").write_text(json.dumps(config))
    with SafetensorsFile(tiny_a / "tiny-a-packed" / "model.safetensors") as f:
        from bitnet_pack.containers.safetensors import SafetensorsWriter, TensorPlan
        from bitnet_pack.formats.dtypes import bf16_to_f32, f32_to_bf16

        writer = SafetensorsWriter(src / "model.safetensors",
                                   [TensorPlan(n, i.dtype, i.shape) for n, i in f.tensors.items()], {"format": "pt"})
        for name in f.tensors:
            raw = f.raw(name)
            if name.endswith("weight_scale"):  # 1/beta, as BitLinear stores it
                raw = f32_to_bf16(np.float32(1) / bf16_to_f32(raw))
            writer.write(name, raw)
        writer.finish()
    with open_checkpoint(src) as checkpoint:
        assert any("bitlinear" in note for note in checkpoint.notes)
    _, ours = load_weights(src)
    _, reference = load_weights(tiny_a / "tiny-a-packed")
    for name, weight in reference.items():
        if hasattr(weight, "codes"):
            assert np.array_equal(ours[name].codes, weight.codes)
            assert abs(ours[name].beta / weight.beta - 1) < 2**-7  # 1/beta went through bf16


def test_refuses_to_overwrite_and_to_write_into_the_input(tiny_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    code, _, err = run("convert", tiny_a / "tiny-a-bf16", out, "--outtype", "hf-packed")
    assert code == 2 and "exists: pass --force" in err and (out / "keep").exists()
    code, _, err = run("convert", tiny_a / "tiny-a-bf16", out, "--outtype", "hf-packed", "--force")
    assert code == 0 and (out / "config.json").is_file()
    assert (out / "keep").read_text() == "x"  # --force replaces a checkpoint's files, not the user's
    with pytest.raises(OutputExists, match="overwrite the input"):
        HFSink(tiny_a / "tiny-a-bf16" / "sub", "hf-packed", inputs=[tiny_a / "tiny-a-bf16"]).begin(None, [])


def test_unknown_architecture_is_refused(tiny_a: Path, tmp_path: Path) -> None:
    src = tmp_path / "llama"
    src.mkdir()
    config = json.loads((tiny_a / "tiny-a-bf16" / "config.json").read_text())
    config |= {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "quantization_config": None}
    (src / "config.json").write_text(json.dumps(config))  # a plain Llama: no bitnet quantization_config
    with pytest.raises(UnknownArchitecture, match="'llama'.* is not a BitNet b1.58 family"):
        open_checkpoint(src)
    code, _, err = run("convert", src, tmp_path / "o", "--outtype", "hf-packed")
    assert code == 1 and err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_dry_run_writes_nothing(tiny_a: Path, tmp_path: Path) -> None:
    code, out, _ = run("convert", tiny_a / "tiny-a-bf16", tmp_path / "dry", "--outtype", "hf-packed",
                       "--dry-run", "--json")
    assert code == 0 and not (tmp_path / "dry").exists()
    plan = json.loads(out)
    assert plan["bytes_written"] == (tiny_a / "tiny-a-packed" / "model.safetensors").stat().st_size - 8 - 3976
    assert len(plan["tensors"]) == 38


def test_inspect_reports_layout_beta_and_shares(tiny_a: Path) -> None:
    code, out, _ = run("inspect", tiny_a / "tiny-a-packed", "--json")
    assert code == 0
    report = json.loads(out)
    rows = {r["name"]: r for r in report["tensors"]}
    q = rows["model.layers.0.self_attn.q_proj.weight"]
    assert q["layout"] == "hf" and q["dtype"] == "U8" and q["shape"] == [256, 256]
    assert abs(q["beta"] - 0.26943) < 1e-3
    assert abs(sum(q["share"].values()) - 1) < 1e-9 and 0.2 < q["share"]["0"] < 0.6
    assert rows["model.norm.weight"]["beta"] is None
    code, text, _ = run("inspect", tiny_a / "tiny-a-bf16")
    assert code == 0 and "beta=0.2694" in text


@pytest.mark.parametrize("change", [{"num_attention_heads": 0}, {"hidden_size": "256"}, {"vocab_size": -1},
                                    {"num_attention_heads": 3}])
def test_config_sizes_are_checked(change: dict, tiny_a: Path, tmp_path: Path) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    config = json.loads((tiny_a / "tiny-a-bf16" / "config.json").read_text()) | change
    (src / "config.json").write_text(json.dumps(config))
    (src / "model.safetensors").write_bytes((tiny_a / "tiny-a-bf16" / "model.safetensors").read_bytes())
    code, _, err = run("convert", src, tmp_path / "o.gguf", "--outtype", "i2_s")
    key = next(iter(change))
    assert code == 1 and key in err and "internal error" not in err and not (tmp_path / "o.gguf").exists()
