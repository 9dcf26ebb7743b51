"""transformers loads the Llama-style family as we write it: the packed checkpoint rebuilt from
bitnet.cpp's I2_S file (inverse weight_scale, untied lm_head) decodes like the recorded
transformers run of the original checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations.bitnet import BitLinear

from bitnet_pack.pipeline.convert import convert
from bitnet_pack.pipeline.sinks.hf import HFSink
from bitnet_pack.pipeline.sources import open_checkpoint

pytestmark = pytest.mark.interop
FIXTURES = Path(__file__).parents[1] / "fixtures"


def greedy_ids(model, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(ids).logits[0, -1].argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


@pytest.mark.parametrize("family", ["llama3", "falcon3"])
def test_transformers_decodes_our_packed_checkpoint_from_the_i2_s_file(family: str, tmp_path: Path) -> None:
    with open_checkpoint(FIXTURES / f"fam-{family}" / f"fam-{family}-i2_s.gguf") as source:
        convert(source, HFSink(tmp_path / "packed", "hf-packed"))
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "packed", output_loading_info=True,
                                                       dtype=torch.float32)
    torch.nn.Module.float(model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert sum(isinstance(m, BitLinear) for m in model.modules()) == 14
    records = json.loads((FIXTURES / f"fam-{family}" / f"fam-{family}.decode.json").read_text())["prompts"]
    for record in records:
        assert greedy_ids(model.eval(), record["prompt"], 16) == record["transformers_fp32"]["ids"]
