"""Issue 18's classes on the BitNet embedding paths (embedding_*, merged from main): the readers,
verify's traces and ids, convert's options and JSON. Each refusal is one `Error:` line, exit 1
(2 for usage), inputs unchanged, nothing written."""
from __future__ import annotations

import io
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from gguf import GGUFValueType as VT
from hostile_cases import edit_safetensors, kv_set, only, rewrite_gguf, set_bits
from test_hostile import one_error_line, run, snapshot

GEMMA = FIXTURES / "emb-gemma3"
ARCH = "gemma3"


@pytest.fixture
def hf_model(tmp_path: Path) -> Path:
    model = tmp_path / "inputs" / "hf"
    shutil.copytree(GEMMA / "hf", model)
    return model


def edited_gguf(tmp_path: Path, *, kv=None, tensor=None) -> Path:
    (tmp_path / "inputs").mkdir(exist_ok=True)
    return rewrite_gguf(GEMMA / "emb-gemma3-i2_s.gguf", tmp_path / "inputs" / "edited.gguf", kv=kv, tensor=tensor)


def refused(tmp_path: Path, code: int, *args: object) -> str:
    """The command's one error line; the inputs unchanged and nothing in outputs/."""
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir(exist_ok=True)
    outputs.mkdir(exist_ok=True)
    before = snapshot(inputs)
    started = time.monotonic()
    exit_code, _, stderr = run(*args)
    assert exit_code == code, stderr
    assert time.monotonic() - started < 60
    assert snapshot(inputs) == before and not any(outputs.iterdir())
    return one_error_line(stderr)


def edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


@pytest.mark.parametrize("module_path", ["../outside", "/etc"])
def test_pooling_path_stays_in_the_checkpoint(tmp_path: Path, hf_model: Path, module_path: str) -> None:
    (tmp_path / "inputs" / "outside").mkdir()
    (tmp_path / "inputs" / "outside" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    edit_json(hf_model / "modules.json", lambda modules: modules[1].update(path=module_path))
    line = refused(tmp_path, 1, "convert", hf_model, tmp_path / "outputs" / "x.gguf", "--outtype", "f32")
    assert "modules.json" in line and repr(module_path) in line


def test_pooling_symlink_out_of_the_checkpoint(tmp_path: Path, hf_model: Path) -> None:
    (tmp_path / "inputs" / "outside").mkdir()
    (tmp_path / "inputs" / "outside" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    shutil.rmtree(hf_model / "1_Pooling")
    os.symlink(tmp_path / "inputs" / "outside", hf_model / "1_Pooling")
    line = refused(tmp_path, 1, "inspect", hf_model)
    assert "leads outside the checkpoint" in line


@pytest.mark.parametrize("text, said", [('{"a": 1, "a": 2}', "'a' appears twice"), ("[1, NaN]", "NaN")])
def test_modules_json_is_strict(tmp_path: Path, hf_model: Path, text: str, said: str) -> None:
    (hf_model / "modules.json").write_text(text)
    line = refused(tmp_path, 1, "inspect", hf_model)
    assert "modules.json" in line and said in line


def test_config_duplicate_key_and_layer_count(tmp_path: Path, hf_model: Path) -> None:
    text = (hf_model / "config.json").read_text()
    (hf_model / "config.json").write_text(text.replace('"vocab_size": 448', '"vocab_size": 448, "vocab_size": 9'))
    assert "'vocab_size' appears twice" in refused(tmp_path, 1, "inspect", hf_model)
    (hf_model / "config.json").write_text(text.replace('"num_hidden_layers": 2', '"num_hidden_layers": 1000000'))
    line = refused(tmp_path, 1, "convert", hf_model, tmp_path / "outputs" / "x.gguf", "--outtype", "i2_s")
    assert "num_hidden_layers 1000000" in line and "holds only" in line


def test_config_rope_scaling_and_linear_class(tmp_path: Path, hf_model: Path) -> None:
    packed = tmp_path / "inputs" / "packed"
    code, _, stderr = run("convert", hf_model, packed, "--outtype", "hf-packed")
    assert code == 0, stderr
    edit_json(hf_model / "config.json", lambda c: c.update(rope_scaling={"rope_type": "yarn", "factor": 4.0}))
    assert "rope scaling" in refused(tmp_path, 1, "inspect", hf_model)
    edit_json(packed / "config.json", lambda c: c["quantization_config"].update(linear_class="bitlinear2"))
    line = refused(tmp_path, 1, "convert", packed, tmp_path / "outputs" / "x.gguf", "--outtype", "i2_s")
    assert "linear_class 'bitlinear2'" in line


def test_nan_embedding_is_refused(tmp_path: Path, hf_model: Path) -> None:
    edit_safetensors(hf_model, only("model.embed_tokens.weight", set_bits(0x7FC0, 3)))
    line = refused(tmp_path, 1, "convert", hf_model, tmp_path / "outputs" / "x.gguf", "--outtype", "f16")
    assert "'model.embed_tokens.weight'" in line and "3 NaN/Inf values" in line


def test_gguf_nan_norm_is_refused(tmp_path: Path) -> None:
    def nan_norm(name: str, info, data: np.ndarray) -> np.ndarray:
        if name == "output_norm.weight":
            data.view(np.uint16)[:2] = 0x7E00  # F16 NaN
        return data
    src = edited_gguf(tmp_path, tensor=nan_norm)
    line = refused(tmp_path, 1, "convert", src, tmp_path / "outputs" / "x.gguf", "--outtype", "f32")
    assert "'output_norm.weight'" in line and "2 NaN/Inf values" in line


@pytest.mark.parametrize("kv, said", [
    (kv_set(f"{ARCH}.block_count", 10**9, VT.UINT32), ("block_count 1000000000", "holds only 42")),
    (kv_set(f"{ARCH}.rope.scaling.type", "yarn", VT.STRING), ("rope scaling", "'yarn'")),
    (kv_set("tokenizer.ggml.tokens", np.arange(448, dtype=np.int32), VT.ARRAY, VT.INT32),
     ("tokenizer.ggml.tokens is ARRAY of INT32",)),
    (kv_set(f"{ARCH}.embedding_length", "256", VT.STRING), ("hidden_size must be a positive integer",)),
])
def test_gguf_metadata_is_checked(tmp_path: Path, kv, said: tuple[str, ...]) -> None:
    src = edited_gguf(tmp_path, kv=kv)
    line = refused(tmp_path, 1, "convert", src, tmp_path / "outputs" / "x.gguf", "--outtype", "f16")
    assert "edited.gguf" in line and all(s in line for s in said), line


def npz_bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(16 << 20, np.float32))
        archive.writestr("embeddings.npy", buffer.getvalue())
    return path


def test_verify_traces_and_ids(tmp_path: Path) -> None:
    model = GEMMA / "emb-gemma3-i2_s.gguf"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    os.mkfifo(inputs / "pipe.npz")
    assert "is a FIFO" in refused(tmp_path, 1, "verify", model, "--against", inputs / "pipe.npz")
    assert "inflate to" in refused(tmp_path, 1, "verify", model, "--against", npz_bomb(inputs / "bomb.npz"))
    line = refused(tmp_path, 2, "verify", model, model, "--ids", "1," + "9" * 30)
    assert "--ids" in line and "token ids are integers" in line


def test_verify_record_keeps_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    link = tmp_path / "outputs" / "trace.npz"
    os.symlink(tmp_path / "nowhere", link)
    code, _, stderr = run("verify", GEMMA / "emb-gemma3-i2_s.gguf", "--record", link, "--ids", "1,2")
    assert code == 2 and "trace.npz exists" in one_error_line(stderr)
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["trace.npz"]
    assert run("verify", GEMMA / "emb-gemma3-i2_s.gguf", "--record", link, "--ids", "1,2", "--force")[0] == 0
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["trace.npz"] and not link.is_symlink()


def test_split_is_refused_for_embedding_models(tmp_path: Path) -> None:
    line = refused(tmp_path, 2, "convert", GEMMA / "emb-gemma3-i2_s.gguf", tmp_path / "outputs" / "x.gguf",
                   "--outtype", "f16", "--split-max-size", "1M")
    assert "BitNet embedding models take only" in line


def test_json_schema_covers_embedding_models(tmp_path: Path) -> None:
    out = tmp_path / "x.gguf"
    code, stdout, stderr = run("convert", GEMMA / "hf", out, "--outtype", "i2_s", "--dry-run", "--json")
    assert code == 0, stderr
    planned = json.loads(stdout)
    code, stdout, stderr = run("convert", GEMMA / "hf", out, "--outtype", "i2_s", "--json")
    assert code == 0, stderr
    written = json.loads(stdout)
    code, stdout, stderr = run("inspect", out, "--json")
    assert code == 0, stderr
    inspected = json.loads(stdout)
    assert set(planned) == set(written) == set(inspected)
    assert planned["schema"] == "bitnet-pack/1" and planned["dry_run"] and planned["exists"] is False
    assert planned["family"] == written["family"] == inspected["family"] == "emb-gemma3"
    assert planned["files"] == written["files"] == [{"path": str(out), "role": "gguf"}]
    assert written["path"] == str(GEMMA / "hf") and written["layout"] == "bf16"
    assert [t["name"] for t in planned["tensors"]] == [t["name"] for t in inspected["tensors"]]
    assert inspected["pooling"] == "last" and inspected["embedding_size"] == 256
    assert inspected["model"]["layers"] == 2 and inspected["model"]["vocab"] == 448
    assert inspected["model"]["tensor_bytes"] == sum(t["nbytes"] for t in inspected["tensors"])
    assert inspected["model"]["file_bytes"] == out.stat().st_size


def test_inspect_names_embedding_tensors_as_asked() -> None:
    code, stdout, _ = run("inspect", GEMMA / "emb-gemma3-i2_s.gguf", "--json")
    assert code == 0 and json.loads(stdout)["tensors"][0]["name"] == "token_embd.weight"
    code, stdout, _ = run("inspect", GEMMA / "emb-gemma3-i2_s.gguf", "--json", "--hf-names")
    assert code == 0 and json.loads(stdout)["tensors"][0]["name"] == "model.embed_tokens.weight"


def test_embedding_type_does_not_apply_to_embedding_models(tmp_path: Path) -> None:
    line = refused(tmp_path, 2, "convert", GEMMA / "hf", tmp_path / "outputs" / "x.gguf", "--outtype", "i2_s",
                   "--embedding-type", "q8_0")
    assert "--embedding-type does not apply to BitNet embedding models" in line


@pytest.mark.parametrize("embedding_type", ["q8_0", "Q6_K"])
def test_quantized_embedding_of_nan_is_refused(tmp_path: Path, embedding_type: str) -> None:
    from corrupt_files import copy_fixture

    model = copy_fixture(tmp_path / "inputs")
    edit_safetensors(model, only("model.embed_tokens.weight", set_bits(0x7FC0, 2)))
    line = refused(tmp_path, 1, "convert", model, tmp_path / "outputs" / "x.gguf", "--outtype", "i2_s",
                   "--embedding-type", embedding_type)
    assert "'model.embed_tokens.weight'" in line and "2 NaN/Inf values" in line
