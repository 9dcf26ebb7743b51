"""transformers loads the BitNet embedding models' packed form we write (AutoBitLinear offline with
use_rms_norm: the per-projection norm) and its last-token embedding is ours to float rounding;
the packed directory converts on to the converter's I2_S file byte for byte."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURES
from transformers import AutoModel
from transformers.integrations.bitnet import AutoBitLinear

from bitnet_pack.cli.main import main
from bitnet_pack.engine.encoder import Encoder
from bitnet_pack.pipeline.sources.embedding import open_embedding

pytestmark = pytest.mark.interop
IDS = {"emb-gemma3": [2, 340, 359, 276, 319, 292, 352, 368, 428, 406, 277, 1],
       "emb-qwen3": [128000, 9906, 1917, 11, 1268, 527, 499, 30]}


@pytest.mark.parametrize("model", ["emb-gemma3", "emb-qwen3"])
def test_transformers_runs_our_packed_embedding_model(model: str, shared_vectors: Path, tmp_path: Path) -> None:
    source = FIXTURES / "emb-gemma3" / "hf" if model == "emb-gemma3" else shared_vectors / model / "hf"
    packed = tmp_path / "hf"  # named like the peer's folder: general.name follows it
    assert CliRunner().invoke(main, ["convert", str(source), str(packed), "--outtype", "hf-packed"]).exit_code == 0
    loaded, info = AutoModel.from_pretrained(packed, dtype=torch.float32, output_loading_info=True)
    torch.nn.Module.float(loaded).eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    linears = [m for m in loaded.modules() if isinstance(m, AutoBitLinear)]
    assert len(linears) == 14 and all(m.rms_norm is not None and not m.online_quant for m in linears)
    with torch.no_grad():
        last = loaded(input_ids=torch.tensor([IDS[model]])).last_hidden_state[0, -1]
    theirs = (last / last.norm()).numpy()
    with open_embedding(packed) as opened:
        ours = Encoder(opened).embed(IDS[model])
    assert np.max(np.abs(ours - theirs)) < 1e-6
    out = tmp_path / "again.gguf"
    assert CliRunner().invoke(main, ["convert", str(packed), str(out), "--outtype", "i2_s"]).exit_code == 0
    peer = FIXTURES / "emb-gemma3" / "emb-gemma3-i2_s.gguf" if model == "emb-gemma3" else \
        shared_vectors / model / "emb-qwen3-i2_s.gguf"
    assert out.read_bytes() == peer.read_bytes()
