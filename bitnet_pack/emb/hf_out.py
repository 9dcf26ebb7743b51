"""An embedding model written as a transformers checkpoint (bf16 safetensors, config.json,
tokenizer and sentence-transformers files), from any embedding source.

    projections  latent floats where the source keeps them (transformers, f32/f16 GGUF), as bf16;
                 from I2_S, codes * beta/density (density = share of non-zero codes), the
                 project's master convention (checkpoints.hf.master_value): the model's own
                 absmean (and the converter's) then gives back these codes and beta, where
                 codes * beta would give beta * density
    Gemma3 norms w = stored - 1 (float32), since GGUFs hold 1 + w; tiny w do not survive 1 + w
    names        the family's spelling (qwen3: no `model.` prefix, as Qwen3Model; gemma3: `model.`)

Packed (hf-packed) checkpoints are refused: transformers' BitNet integration has no place for
the per-projection norms `<proj>.norm`, so no transformers class could load one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checkpoints.hf import master_value
from ..containers.safetensors import SafetensorsWriter, TensorPlan
from ..dtypes import f32_to_bf16
from ..outputs import StagedDir
from ..ternary import TernaryWeight
from .source import POOLING, EmbSource, EmbTensor, is_native_gemma_norm

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentence_bert_config.json",
              "modules.json", "1_Pooling/config.json")
MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
MODE_KEYS = {1: "pooling_mode_mean_tokens", 2: "pooling_mode_cls_token", 3: "pooling_mode_lasttoken"}


def hf_values(source: EmbSource, tensor: EmbTensor) -> tuple[np.ndarray, int]:
    """float32 values as transformers stores them, and how many differ from the source's after
    the bf16 rounding (0 for a bf16 source and for what an f32 GGUF of one holds)."""
    value = tensor.load()
    if isinstance(value, TernaryWeight):
        return value.codes.astype(np.float32) * master_value(value.codes, value.beta), 0
    values = np.asarray(value, np.float32)
    if is_native_gemma_norm(source.family, tensor.gguf):
        values = values - np.float32(1.0)
    rounded = f32_to_bf16(values.reshape(-1)).astype(np.uint32) << 16
    return values, int(np.count_nonzero(rounded.view(np.float32) != values.reshape(-1)))


def write_hf(source: EmbSource, out: Path, *, force: bool = False) -> tuple[Path, int, list[str]]:
    prefix, notes = source.family.hf_prefix, []
    names = {t.gguf: prefix + t.hf.removeprefix("model.") for t in source.tensors}
    plans = [TensorPlan(names[t.gguf], "BF16", tuple(t.shape)) for t in source.tensors]
    staged = StagedDir(out, force=force, inputs=[source.path])
    try:
        writer = SafetensorsWriter(staged.temp / "model.safetensors", plans, {"format": "pt"})
        inexact, written = 0, 0
        for tensor in source.tensors:
            values, lost = hf_values(source, tensor)
            inexact += lost
            bits = f32_to_bf16(values.reshape(-1)).reshape(tensor.shape)
            writer.write(names[tensor.gguf], bits)
            written += bits.nbytes
        writer.finish()
        _side_files(source, staged.temp, notes)
        if inexact:
            notes.append(f"{inexact} values are not bf16 numbers (f16 storage or Gemma's 1+w in float32) and were "
                         "rounded to bf16")
        if any(t.stored == "I2_S" for t in source.tensors):
            notes.append("the source keeps ternary projections only: each is written as codes * beta/density, "
                         "which the model's absmean turns back into the same codes and beta (the latent weights "
                         "are not in the file)")
        return staged.commit(), written, notes
    except BaseException:
        staged.abort()
        raise


def _side_files(source: EmbSource, directory: Path, notes: list[str]) -> None:
    config = dict(source.config) | {"torch_dtype": "bfloat16"}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if source.kind == "hf":
        for name in SIDE_FILES:
            if (source.path / name).is_file():
                (directory / name).parent.mkdir(parents=True, exist_ok=True)
                (directory / name).write_bytes((source.path / name).read_bytes())
        return
    (directory / "modules.json").write_text(json.dumps(MODULES, indent=2) + "\n")
    pooling = {"word_embedding_dimension": source.embedding_size} | {key: value == source.pooling
                                                                      for value, key in MODE_KEYS.items()}
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling | {"include_prompt": True}, indent=2) + "\n")
    notes.append(f"pooling {POOLING.get(source.pooling, source.pooling)} written to 1_Pooling/config.json")
    try:
        from ..tokenizer_reverse import tokenizer_files_from_gguf

        files = tokenizer_files_from_gguf({k: v for k, v, *_ in source.tokenizer_kvs()})
    except Exception as exc:  # noqa: BLE001 - the weights stay useful without a tokenizer
        notes.append(f"no tokenizer files: the GGUF's tokenizer keys could not be turned back ({exc})")
        return
    for name, text in files.items():
        (directory / name).write_text(text)
