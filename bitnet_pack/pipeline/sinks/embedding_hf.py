"""An embedding model written as a transformers checkpoint (bf16 safetensors, config.json,
tokenizer and sentence-transformers files), from any embedding source.

    projections  latent floats where the source keeps them (transformers, f32/f16 GGUF), as bf16;
                 from I2_S, codes * beta/density (density = share of non-zero codes), the
                 project's master convention (checkpoints.hf.master_value): the model's own
                 absmean (and the converter's) then gives back these codes and beta, where
                 codes * beta would give beta * density
    Gemma3 norms w = stored - 1 (float32), since GGUFs hold 1 + w; tiny w do not survive 1 + w
    names        the family's spelling (qwen3: no `model.` prefix, as Qwen3Model; gemma3: `model.`)

hf-packed: transformers' BitNet integration has the form: `quantization_config` quant_method
bitnet, linear_class autobitlinear, offline, `use_rms_norm` true (its AutoBitLinear then owns an
RMSNorm `<proj>.rms_norm` before the int8 activations, which is the per-projection norm), so
each projection is uint8 [ceil(out/4), in] (layout `hf`) + `<proj>.weight_scale` = beta (F32 by
default here, so no beta is rounded; `--scale-dtype bf16` as transformers writes it) and
`<proj>.norm.weight` becomes `<proj>.rms_norm.weight`. `emb.hf_source` reads it back.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...containers.outputs import StagedDir
from ...containers.safetensors import SafetensorsWriter, TensorPlan
from ...formats.absmean import ternarize
from ...formats.dtypes import bf16_to_f32, f32_to_bf16
from ...formats.layouts import get_layout
from ...formats.ternary import TernaryWeight
from ..sources.embedding import POOLING, EmbSource, EmbTensor, is_native_gemma_norm
from ..sources.hf import master_value

PACKED_NORM = ".rms_norm.weight"  # transformers' AutoBitLinear(use_rms_norm=True) calls it so

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


def packed_config(config: dict, scale: str) -> dict:
    qc = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline",
          "use_rms_norm": True, "rms_norm_eps": config.get("rms_norm_eps", 1e-6)}
    return dict(config) | {"quantization_config": qc}


def _name(source: EmbSource, tensor: EmbTensor, packed: bool) -> str:
    name = source.family.hf_prefix + tensor.hf.removeprefix("model.")
    return name.replace(".norm.weight", PACKED_NORM) if packed and tensor.hf.endswith("_proj.norm.weight") else name


def _plans(source: EmbSource, packed: bool, scale: str) -> list[TensorPlan]:
    plans = []
    for tensor in source.tensors:
        name = _name(source, tensor, packed)
        if packed and tensor.kind == "linear":
            plans += [TensorPlan(name, "U8", get_layout("hf").stored_shape(tuple(tensor.shape))),
                      TensorPlan(name + "_scale", scale, (1,))]
        else:
            plans.append(TensorPlan(name, "BF16", tuple(tensor.shape)))
    return plans


def write_hf(source: EmbSource, out: Path, *, packed: bool = False, scale_dtype: str = "f32",
             force: bool = False) -> tuple[Path, int, list[str]]:
    notes, scale = [], scale_dtype.upper()
    staged = StagedDir(out, force=force, inputs=[source.path])
    try:
        writer = SafetensorsWriter(staged.temp / "model.safetensors", _plans(source, packed, scale), {"format": "pt"})
        inexact, written, rounded = 0, 0, 0
        for tensor in source.tensors:
            name = _name(source, tensor, packed)
            if packed and tensor.kind == "linear":
                value = tensor.load()
                weight = value if isinstance(value, TernaryWeight) else ternarize(value, tensor=tensor.gguf)
                beta = np.array([weight.beta], np.float32)
                stored = beta if scale == "F32" else f32_to_bf16(beta)
                rounded += scale != "F32" and bf16_to_f32(stored)[0] != beta[0]
                parts = [(name, get_layout("hf").encode(weight)), (name + "_scale", stored)]
            else:
                values, lost = hf_values(source, tensor)
                inexact += lost
                parts = [(name, f32_to_bf16(values.reshape(-1)).reshape(tensor.shape))]
            for part_name, data in parts:
                writer.write(part_name, data)
                written += data.nbytes
        writer.finish()
        _side_files(source, staged.temp, notes, packed_config(source.config, scale) if packed else None)
        if inexact:
            notes.append(f"{inexact} values are not bf16 numbers (f16 storage or Gemma's 1+w in float32) and were "
                         "rounded to bf16")
        if rounded:
            notes.append(f"weight_scale is bf16: rounded {rounded} betas (the default f32 keeps them)")
        if any(t.stored == "I2_S" for t in source.tensors) and not packed:
            notes.append("the source keeps ternary projections only: each is written as codes * beta/density, "
                         "which the model's absmean turns back into the same codes and beta (the latent weights "
                         "are not in the file)")
        return staged.commit(), written, notes
    except BaseException:
        staged.abort()
        raise


def _side_files(source: EmbSource, directory: Path, notes: list[str], packed: dict | None = None) -> None:
    """config.json (a master has no quantization_config), tokenizer and pooling files."""
    config = dict(packed or {k: v for k, v in source.config.items() if k != "quantization_config"})
    config["torch_dtype"] = "bfloat16"
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
        from ...families.tokenizers.reverse import tokenizer_files_from_gguf

        kvs = {k: v for k, v, *_ in source.tokenizer_kvs()}
        count = len(kvs.get("tokenizer.ggml.tokens") or [])
        for key in [k for k, v in kvs.items() if k.endswith("_token_id") and isinstance(v, int) and v >= count]:
            notes.append(f"{key} = {kvs.pop(key)} is not a token of this {count}-token vocabulary (the converter "
                         "forces qwen3's <|endoftext|> id): left out of the rebuilt tokenizer")
        files = tokenizer_files_from_gguf(kvs)
    except Exception as exc:  # noqa: BLE001 - the weights stay useful without a tokenizer
        notes.append(f"no tokenizer files: the GGUF's tokenizer keys could not be turned back ({exc})")
        return
    for name, text in files.items():
        (directory / name).write_text(text)
