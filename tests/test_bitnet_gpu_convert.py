"""bitnet-gpu out and back, against bitnet.cpp's own GPU checkpoint of tiny-a (fixtures/gpu-tiny-a)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from test_fixtures import read_sums, sha256

from bitnet_pack import convert, verify
from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.containers.safetensors import SafetensorsFile
from bitnet_pack.errors import HeaderInvalid, UsageError
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.pipeline.sources import load_weights

GPU = Path(__file__).parents[1] / "fixtures" / "gpu-tiny-a"
# bitnet.cpp's converter ternarizes in bf16 arithmetic: these tiny-a projections get other codes
# than transformers' float32 absmean (counted from the two; the rest are equal)
DIFFERING = {"model.layers.0.self_attn.q_proj.weight": 128, "model.layers.0.mlp.gate_proj.weight": 196,
             "model.layers.0.mlp.up_proj.weight": 295, "model.layers.0.mlp.down_proj.weight": 260,
             "model.layers.1.self_attn.k_proj.weight": 81, "model.layers.1.self_attn.o_proj.weight": 126,
             "model.layers.1.mlp.gate_proj.weight": 137, "model.layers.1.mlp.down_proj.weight": 274}


def test_fixture_files_are_the_shared_sets(shared_vectors: Path) -> None:
    sums = read_sums(GPU / "SHA256SUMS")
    assert sorted(sums) == sorted(p.name for p in GPU.iterdir() if p.name not in ("SHA256SUMS", "NOTE.md"))
    assert all(sha256(GPU / name) == digest for name, digest in sums.items())
    assert read_sums(shared_vectors / "gpu-tiny-a" / "SHA256SUMS").items() >= sums.items()


def peer_state(stem: str) -> dict:
    """The peer's tensors, from the byte-identical safetensors twins (no unpickling)."""
    return load_file(GPU / f"{stem}.safetensors")


def assert_same_state(ours: dict, peer: dict) -> None:
    assert sorted(ours) == sorted(peer)
    for name, tensor in peer.items():
        mine = ours[name]
        assert mine.dtype == tensor.dtype and mine.shape == tensor.shape, name
        assert torch.equal(mine.view(torch.int8), tensor.view(torch.int8)), name  # bits, -0.0 included


@pytest.fixture(scope="module")
def from_master(tmp_path_factory, tiny_a: Path) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("gpu") / "gpu"
    report = convert(tiny_a / "tiny-a-bf16", out, outtype="bitnet-gpu")
    return out, report.notes


def test_master_gives_bitnet_cpps_tensors(from_master) -> None:
    out, notes = from_master
    for stem in ("model_state_int2", "model_state_fp16"):
        ours = torch.load(out / f"{stem}.pt", weights_only=True)
        assert_same_state(ours, peer_state(stem))
    assert ("1497 codes in 8 projections differ from transformers' float32 absmean" in " ".join(notes))
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


def test_key_order_is_the_converters(from_master) -> None:
    out, _ = from_master
    ours = list(torch.load(out / "model_state_int2.pt", weights_only=True))
    peer = list(torch.load(GPU / "model_state_int2.pt", weights_only=True))
    assert ours == peer
    fp16 = list(torch.load(out / "model_state_fp16.pt", weights_only=True))
    assert fp16 == [name for name in peer if not name.endswith("weight_scale")]


@pytest.fixture()
def gpu_dir(tmp_path: Path, tiny_a: Path):
    """A copy of the peer's checkpoint with the master's config.json beside it."""
    def make(*files: str, folder_name: str = "peer") -> Path:
        folder = tmp_path / folder_name
        folder.mkdir()
        for name in files:
            shutil.copy(GPU / name, folder / name)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
            shutil.copy(tiny_a / "tiny-a-bf16" / name, folder / name)
        return folder
    return make


def test_reading_the_peers_checkpoint_back(gpu_dir, tiny_a: Path) -> None:
    _, packed = load_weights(tiny_a / "tiny-a-packed")
    _, from_pickle = load_weights(gpu_dir("model_state_int2.pt"))
    _, from_twin = load_weights(gpu_dir("model_state_int2.safetensors", folder_name="twin"))
    int2 = peer_state("model_state_int2")
    for name, weight in packed.items():
        if not hasattr(weight, "codes"):
            assert np.array_equal(from_pickle[name].view(np.uint32), np.asarray(weight).view(np.uint32)), name
            continue
        assert from_pickle[name].same_as(from_twin[name])
        assert np.count_nonzero(from_pickle[name].codes != weight.codes) == DIFFERING.get(name, 0), name
    assert float(from_pickle["model.layers.0.self_attn.o_proj.weight"].beta) == \
        int2["layers.0.attention.wo.weight_scale"][0].item() == 0.2158203125


def test_peer_checkpoint_into_i2s_and_hf_packed(gpu_dir, tmp_path: Path) -> None:
    folder = gpu_dir("model_state_int2.pt")
    _, weights = load_weights(folder)
    i2s = convert(folder, tmp_path / "gpu.gguf", outtype="i2_s")
    packed = convert(folder, tmp_path / "packed", outtype="hf-packed")
    _, from_packed = load_weights(packed.output)
    layout, file = get_layout("i2_s"), GGUFFile(i2s.output)
    assert sum(1 for info in file.tensors.values() if info.type_name == "I2_S") == 14
    for name, weight in weights.items():
        if hasattr(weight, "codes"):
            assert from_packed[name].same_as(weight), name  # bf16 slots fit a bf16 weight_scale
            gguf_name = next(n for n in file.tensors if _hf(n) == name)
            assert np.array_equal(file.tensor_bytes(gguf_name), layout.encode(weight)), name
    assert verify(folder, i2s.output, tokens=4).identical


def _hf(gguf_name: str) -> str:
    from bitnet_pack.families.arch import BITNET_2B4T

    return BITNET_2B4T.to_hf(gguf_name)


def test_verify_master_against_its_gpu_checkpoint_says_what_differs(from_master, tiny_a: Path) -> None:
    report = verify(tiny_a / "tiny-a-bf16", from_master[0], tokens=2)
    assert report.ok  # the converter's own bf16 ternarization is the layout's declared rounding of a master
    assert "codes and β by bitnet-gpu's own converter" in report.rounded and "1497 codes in 8" in report.rounded
    strict = verify(tiny_a / "tiny-a-bf16", from_master[0], tokens=2, strict=True)
    assert not strict.ok and not strict.rounded
    assert "ternary codes differ in 8 tensor(s)" in strict.cause and "(128 of 65536 codes)" in strict.cause
    assert "beta differs in 14 tensor(s)" in strict.cause


def test_packed_and_i2s_into_gpu_and_verify(tiny_a: Path, tmp_path: Path) -> None:
    """Codes kept; beta rounded to the nearest bf16, announced. tiny-a-packed's weight_scale is
    exactly that rounding, so it runs bit for bit like a GPU checkpoint made from I2_S."""
    from_packed = convert(tiny_a / "tiny-a-packed", tmp_path / "p", outtype="bitnet-gpu")
    assert not any("weight_scale is bf16" in n for n in from_packed.notes)
    assert verify(tiny_a / "tiny-a-packed", from_packed.output, tokens=4).identical
    i2s = convert(tiny_a / "tiny-a-bf16", tmp_path / "m.gguf", outtype="i2_s", embedding_type="bf16").output
    from_i2s = convert(i2s, tmp_path / "i", outtype="bitnet-gpu")  # fp32 betas, bf16 embedding
    assert any("weight_scale is bf16: rounded 14 betas to the nearest bf16" in n for n in from_i2s.notes)
    assert verify(tiny_a / "tiny-a-packed", from_i2s.output, tokens=4).identical
    rounded = verify(i2s, from_i2s.output, tokens=2)  # its fp32 betas were rounded to bf16: declared
    assert rounded.identical and rounded.rounded == "β to bf16 (bitnet-gpu weight_scale) in 14 tensors on A"
    assert not verify(i2s, from_i2s.output, tokens=2, strict=True).identical
    int2 = torch.load(from_i2s.output / "model_state_int2.pt", weights_only=True)
    peer = peer_state("model_state_int2")
    assert int2["layers.0.attention.wqkv.weight_scale"].tolist() == [0.26953125, 0.2177734375, 0.26953125, 0.0]
    assert torch.equal(int2["layers.0.attention.wo.weight"], peer["layers.0.attention.wo.weight"])  # same codes
    assert int2["layers.0.attention.wo.weight_scale"][0] != peer["layers.0.attention.wo.weight_scale"][0]


def test_only_tensors_are_unpickled(gpu_dir, tmp_path: Path) -> None:
    folder = gpu_dir()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"layers.0.attention.wqkv.weight": Payload()}, folder / "model_state_int2.pt")
    with pytest.raises(HeaderInvalid, match="not a tensors-only torch checkpoint"):
        load_weights(folder)
    assert not marker.exists()


def test_refusals(tiny_a: Path, tmp_path: Path, gpu_dir, monkeypatch) -> None:
    result = CliRunner().invoke(main, ["convert", str(tiny_a / "tiny-a-bf16"), str(tmp_path / "x.gguf"),
                                       "--outtype", "bitnet-gpu"])
    assert result.exit_code == 2 and "does not go in a GGUF file" in result.output
    result = CliRunner().invoke(main, ["convert", str(tiny_a / "tiny-a-bf16"), str(tmp_path / "d"),
                                       "--outtype", "bitnet-gpu", "--scale-dtype", "f32"])
    assert result.exit_code == 2 and "--scale-dtype" in result.output
    folder = gpu_dir("model_state_int2.safetensors")
    (folder / "config.json").unlink()
    with pytest.raises(Exception, match="config.json is missing"):
        load_weights(folder)
    monkeypatch.setitem(sys.modules, "torch", None)  # a core install: no torch
    with pytest.raises(UsageError, match=r"needs torch \(pip install"):
        convert(tiny_a / "tiny-a-bf16", tmp_path / "no-torch", outtype="bitnet-gpu")
    shutil.copy(tiny_a / "tiny-a-bf16" / "config.json", folder / "config.json")
    _, weights = load_weights(folder)  # the safetensors twin needs no torch
    assert len(weights) == 24
    assert SafetensorsFile(folder / "model_state_int2.safetensors").tensors


def test_inspect_raw_shows_the_twins_and_refuses_a_bare_pickle(gpu_dir) -> None:
    twin = gpu_dir("model_state_int2.safetensors", "model_state_fp16.safetensors", folder_name="twin")
    result = CliRunner().invoke(main, ["inspect", str(twin), "--raw"])
    assert result.exit_code == 0 and "[model_state_int2.safetensors]: safetensors, 827432 bytes, 27 tensors" \
        in result.output and "[model_state_fp16.safetensors]" in result.output
    pickle = gpu_dir("model_state_int2.pt", folder_name="pickle")
    result = CliRunner().invoke(main, ["inspect", str(pickle), "--raw"])
    assert result.exit_code == 2 and "is a torch pickle" in result.output
    result = CliRunner().invoke(main, ["inspect", str(pickle / "model_state_int2.pt"), "--json"])
    assert result.exit_code == 0 and '"kind": "bitnet-gpu"' in result.output


def test_verify_command_names_what_differs(from_master, tiny_a: Path) -> None:
    args = ["verify", str(tiny_a / "tiny-a-bf16"), str(from_master[0]), "--tokens", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "1497 codes in 8 tensors differ from float32 absmean's" in result.output
    result = CliRunner().invoke(main, [*args, "--strict"])
    assert result.exit_code == 3 and "ternary codes differ in 8 tensor(s)" in result.output


def test_bitnet_cpps_own_folder_holds_both(tmp_path: Path, tiny_a: Path) -> None:
    """bitnet.cpp converts inside the bf16 master's folder: the folder is the master, the
    state file names the GPU checkpoint."""
    from bitnet_pack.pipeline.sources import open_checkpoint

    folder = tmp_path / "checkpoints"
    shutil.copytree(tiny_a / "tiny-a-bf16", folder)
    shutil.copy(GPU / "model_state_int2.pt", folder)
    with open_checkpoint(folder) as master, open_checkpoint(folder / "model_state_int2.pt") as gpu:
        assert (master.kind, gpu.kind) == ("bf16-master", "bitnet-gpu")
