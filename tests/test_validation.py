"""Issue 12 class 1 and the hyper-parameter checks: sources that contradict their architecture
or config, generated from the fixtures, are refused before a byte is written -- exit 1, one
stderr line naming the first problem, no traceback, nothing left behind, the input unchanged,
and `--dry-run` gives the same verdict."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile, GGUFWriter
from bitnet_pack.engine.model import ModelConfig
from bitnet_pack.errors import HeaderInvalid, UnknownArchitecture

FIXTURES = Path(__file__).parents[1] / "fixtures"
LATENT = FIXTURES / "fam-1bitllm" / "fam-1bitllm-hf"      # float32: easy to edit
PACKED = FIXTURES / "fam-llama3" / "fam-llama3-hf"        # uint8 + inverse weight_scale
I2S = FIXTURES / "fam-llama3" / "fam-llama3-i2_s.gguf"


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_safetensors(model: Path, edit: Callable[[dict[str, tuple[str, list[int], bytes]]], None]) -> None:
    """Read model.safetensors into {name: (dtype, shape, bytes)}, let `edit` change it, write it
    back packed (no holes), independently of bitnet_pack's writer."""
    path = model / "model.safetensors"
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    body = raw[8 + size:]
    tensors = {name: (info["dtype"], info["shape"], body[info["data_offsets"][0]:info["data_offsets"][1]])
               for name, info in header.items() if name != "__metadata__"}
    edit(tensors)
    new_header, data, offset = {}, b"", 0
    for name, (dtype, shape, blob) in tensors.items():
        new_header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        data, offset = data + blob, offset + len(blob)
    text = json.dumps(new_header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def drop(*names: str) -> Callable[[dict], None]:
    def edit(tensors: dict) -> None:
        for name in [n for n in tensors if n.startswith(names)]:
            del tensors[name]
    return edit


def reshape(name: str, shape: list[int]) -> Callable[[dict], None]:
    def edit(tensors: dict) -> None:
        dtype, _, blob = tensors[name]
        tensors[name] = (dtype, shape, blob)
    return edit


def add_tensor(name: str) -> Callable[[dict], None]:
    def edit(tensors: dict) -> None:
        tensors[name] = ("F32", [256], np.ones(256, np.float32).tobytes())
    return edit


def weights_case(src: Path, edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        model = copy_model(src, tmp / "model")
        rewrite_safetensors(model, edit)
        return model
    return make


def config_case(src: Path, **changes: object) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        model = copy_model(src, tmp / "model")
        config = json.loads((model / "config.json").read_text())
        config.update(changes)
        (model / "config.json").write_text(json.dumps(config))
        return model
    return make


def config_text_case(src: Path, old: str, new: str) -> Callable[[Path], Path]:
    """A config.json edited as text (JSON numbers such as 1e400 that Python would not write)."""
    def make(tmp: Path) -> Path:
        model = copy_model(src, tmp / "model")
        text = (model / "config.json").read_text()
        assert old in text
        (model / "config.json").write_text(text.replace(old, new))
        return model
    return make


def gguf_without_tensors(tmp: Path) -> Path:
    out = tmp / "empty.gguf"
    with GGUFFile(I2S) as source:
        writer = GGUFWriter(out, types=source.types)
        for key, field in source.kv.items():
            writer.add_kv(key, field)
        writer.write_header()
        writer.finish()
    return out


def i2s_with_edited_dims(tmp: Path) -> Path:
    """blk.0.ffn_up.weight's ne0 256 -> 255 in the tensor table: read as is, its scale would
    come from code bytes."""
    out = tmp / "edited.gguf"
    name = b"blk.0.ffn_up.weight"
    entry = struct.pack("<Q", len(name)) + name + struct.pack("<IQ", 2, 256)
    data = I2S.read_bytes()
    assert data.count(entry) == 1
    out.write_bytes(data.replace(entry, entry[:-8] + struct.pack("<Q", 255)))
    return out


def gguf_kv_edited(key: str, fmt: str, old: object, new: object) -> Callable[[Path], Path]:
    """The I2_S file with one scalar key-value's bytes replaced (value type kept)."""
    def make(tmp: Path) -> Path:
        out = tmp / "kv.gguf"
        name = key.encode()
        vtype = {"<I": 4, "<f": 6}[fmt]
        entry = struct.pack("<Q", len(name)) + name + struct.pack("<I", vtype)
        data = I2S.read_bytes()
        assert data.count(entry + struct.pack(fmt, old)) == 1
        out.write_bytes(data.replace(entry + struct.pack(fmt, old), entry + struct.pack(fmt, new)))
        return out
    return make


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing_projection": (weights_case(LATENT, drop("model.layers.1.self_attn.k_proj.weight")),
                           "tensor 'model.layers.1.self_attn.k_proj.weight': the 1bitLLM"),
    "missing_embedding": (weights_case(LATENT, drop("model.embed_tokens.weight")), "model.embed_tokens.weight"),
    "missing_norm": (weights_case(LATENT, drop("model.layers.0.post_attention_layernorm.weight")),
                     "post_attention_layernorm.weight"),
    "missing_sub_norm": (weights_case(LATENT, drop("model.layers.0.mlp.ffn_layernorm.weight")),
                         "ffn_layernorm.weight"),
    "missing_layer": (weights_case(LATENT, drop("model.layers.1.")), "num_hidden_layers 2"),
    "missing_packed_projection": (weights_case(PACKED, drop("model.layers.0.mlp.up_proj.weight")),
                                  "mlp.up_proj.weight"),
    "missing_lm_head": (weights_case(PACKED, drop("lm_head.weight")), "lm_head.weight"),
    "q_proj_shape": (weights_case(LATENT, reshape("model.layers.0.self_attn.q_proj.weight", [128, 512])),
                     "shape [128, 512] where config.json implies [256, 256]"),
    "unexpected_tensor": (weights_case(LATENT, add_tensor("model.layers.0.mlp.extra.weight")),
                          "not part of the 1bitLLM"),
    "more_layers_in_config": (config_case(LATENT, num_hidden_layers=3), "num_hidden_layers 3"),
    "fewer_layers_in_config": (config_case(LATENT, num_hidden_layers=1), "beyond config.json num_hidden_layers 1"),
    "kv_heads": (config_case(LATENT, num_key_value_heads=1), "k_proj.weight': shape [128, 256] where"),
    "ffn_size": (config_case(LATENT, intermediate_size=1024), "where config.json implies [256, 1024]"),
    "vocab": (config_case(PACKED, vocab_size=1000), "implies [1000, 256]"),
    "hidden_act": (config_case(LATENT, hidden_act="bogus"), "hidden_act 'bogus'"),
    "relu2_for_llama": (config_case(PACKED, hidden_act="relu2"), "hidden_act 'relu2'"),
    "model_type": (config_case(LATENT, model_type="gpt2", architectures=["GPT2LMHeadModel"]),
                   "model_type 'gpt2'"),
    "rope_nan": (config_text_case(LATENT, '"rope_theta": 10000.0', '"rope_theta": NaN'), "rope_theta"),
    "rope_1e400": (config_text_case(LATENT, '"rope_theta": 10000.0', '"rope_theta": 1e400'), "rope_theta"),
    "rope_zero": (config_case(LATENT, rope_theta=0), "rope_theta must be finite and > 0, got 0"),
    "rope_beyond_float32": (config_case(PACKED, rope_theta=1e39), "not a positive float32"),
    "rope_text": (config_case(LATENT, rope_theta="abc"), "rope_theta must be a number"),
    "eps_negative": (config_case(LATENT, rms_norm_eps=-1e-5), "rms_norm_eps must be finite and > 0"),
    "eps_zero_in_float32": (config_case(LATENT, rms_norm_eps=1e-50), "rms_norm_eps 1e-50 is not a positive"),
    "heads_zero": (config_case(LATENT, num_attention_heads=0), "num_attention_heads must be a positive integer"),
    "kv_heads_not_dividing": (config_case(LATENT, num_key_value_heads=3), "not a multiple of num_key_value_heads 3"),
    "rope_scaling": (config_case(PACKED, rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope scaling"),
    "rope_parameters_scaling": (config_case(PACKED, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4,
                                                                    "factor": 4.0}), "rope scaling"),
    "gguf_no_tensors": (gguf_without_tensors, "holds no tensors"),
    "gguf_more_layers": (gguf_kv_edited("llama.block_count", "<I", 2, 3), "GGUF metadata says num_hidden_layers 3"),
    "gguf_kv_heads": (gguf_kv_edited("llama.attention.head_count_kv", "<I", 2, 4), "where GGUF metadata implies"),
    "gguf_rope_nan": (gguf_kv_edited("llama.rope.freq_base", "<f", 500000.0, float("nan")),
                      "GGUF metadata rope_theta must be finite and > 0, got nan"),
    "i2s_dims_edited": (i2s_with_edited_dims, "tensor 'blk.0.ffn_up.weight': shape [512, 255] where GGUF metadata "
                                               "implies [512, 256]"),
}


def digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("outtype", ["i2_s", "hf-packed"])
def test_source_inconsistent_with_its_architecture_is_refused(case: str, outtype: str, tmp_path: Path) -> None:
    make, fragment = CASES[case]
    src = make(tmp_path)
    before = digest(src)
    out = tmp_path / "out" / ("o.gguf" if outtype == "i2_s" else "o")
    verdicts = []
    for extra in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["convert", str(src), str(out), "--outtype", outtype, *extra])
        err = result.stderr
        assert result.exit_code == 1, (case, extra, result.exit_code, err, result.stdout)
        assert err.startswith("Error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err and fragment in err, err
        verdicts.append(err)
    assert verdicts[0] == verdicts[1]  # --dry-run shows the same verdict
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
    assert digest(src) == before


def test_model_config_refuses_the_same_hyperparameters() -> None:
    config = json.loads((LATENT / "config.json").read_text())
    assert ModelConfig.from_hf(config).hidden_act == "silu"
    for change, error in ((dict(rope_theta=float("nan")), HeaderInvalid), (dict(rms_norm_eps=-1.0), HeaderInvalid),
                          (dict(rope_theta=float("inf")), HeaderInvalid), (dict(hidden_act="gelu"), UnknownArchitecture)):
        with pytest.raises(error):
            ModelConfig.from_hf(config | change)


def test_the_fixtures_themselves_pass(tmp_path: Path) -> None:
    for src in (LATENT, PACKED, I2S):
        result = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "x.gguf"), "--outtype", "tq2_0",
                                           "--dry-run"])
        assert result.exit_code == 0, result.stderr
