"""transformers itself loads what we write, and decodes tiny-a as the recorded peer did."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations.bitnet import AutoBitLinear

from bitnet_pack.pipeline.convert import convert
from bitnet_pack.pipeline.sinks.hf import HFSink
from bitnet_pack.pipeline.sources import load_weights, open_checkpoint

pytestmark = pytest.mark.interop


def packed_copy(source: Path, out: Path) -> Path:
    with open_checkpoint(source) as checkpoint:
        convert(checkpoint, HFSink(out, "hf-packed"))
    return out


def load(directory: Path):
    model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True,
                                                       dtype=torch.float32)
    torch.nn.Module.float(model)  # transformers 5.23 leaves embedding/norms bf16 (vectors README)
    return model.eval(), info


@pytest.mark.parametrize("source", ["fixture", "tiny-a"])
def test_transformers_loads_our_packed_output_exactly(source: str, tiny_a: Path, tmp_path: Path) -> None:
    src = Path(__file__).parents[1] / "fixtures" / "tiny-bitnet" if source == "fixture" else tiny_a / "tiny-a-bf16"
    out = packed_copy(src, tmp_path / "packed")
    model, info = load(out)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    _, ours = load_weights(out)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, AutoBitLinear)}
    assert len(linears) == 7 * json.loads((out / "config.json").read_text())["num_hidden_layers"]
    for name, module in linears.items():
        weight = ours[name + ".weight"]
        assert not module.online_quant
        assert np.array_equal(module.weight.detach().numpy(), weight.codes.astype(np.float32)), name
        assert module.weight_scale.detach().numpy().tolist() == [float(weight.beta)], name


def greedy_ids(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]


def test_transformers_greedy_ids_on_our_packed_tiny_a_match_the_peer(tiny_a: Path, tmp_path: Path) -> None:
    record = json.loads((tiny_a / "tiny-a.decode.json").read_text())
    model, _ = load(packed_copy(tiny_a / "tiny-a-bf16", tmp_path / "packed"))
    for prompt in record["prompts"]:
        expected = prompt["hf_packed_offline"]["ids"]
        assert greedy_ids(model, prompt["prompt"], len(expected)) == expected


def test_our_master_from_packed_runs_like_the_packed_model_in_transformers(tiny_a: Path, tmp_path: Path) -> None:
    """transformers' online WeightQuant on the master we write recovers the packed codes and
    betas, so both decode the same greedy ids."""
    with open_checkpoint(tiny_a / "tiny-a-packed") as checkpoint:
        convert(checkpoint, HFSink(tmp_path / "bf16", "bf16"))
    master, _ = load(tmp_path / "bf16")
    packed, _ = load(tiny_a / "tiny-a-packed")
    prompt = json.loads((tiny_a / "tiny-a.decode.json").read_text())["prompts"][1]["prompt"]
    assert greedy_ids(master, prompt, 8) == greedy_ids(packed, prompt, 8)
