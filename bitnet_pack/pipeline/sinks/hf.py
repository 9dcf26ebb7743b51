"""transformers checkpoints out: packed 1.58-bit (`hf-packed`) or a bf16 master (`bf16`).

hf-packed: `<proj>.weight` uint8 [ceil(out/4), in] (layout `hf`) and `<proj>.weight_scale`
in bf16, in the family's convention (`arch.Family.packed_scale`):

    2b4t, 1bitllm  [beta], `{quant_method: bitnet, linear_class: autobitlinear,
                   quantization_mode: offline}` -- what microsoft/bitnet-b1.58-2B-4T ships
    llama          [1/beta], `{quant_method: bitnet, modules_to_not_convert: [lm_head]}` --
                   transformers' BitLinear (divides), as Llama3-8B-1.58 / Falcon3 ship

(1bitLLM publishes no packed form; ours keeps its names and graph with 2B4T's scale.)

bf16: each projection as codes * m in bf16 with m = beta / density (density = share of
non-zero codes) and config `quantization_mode: online` (1bitLLM: no quantization_config, as
its latent checkpoints have none). transformers' WeightQuant divides by
mean|W| = m * density = beta, so it recovers exactly these codes and this beta (up to the
bf16 rounding of m); writing codes * beta instead would make it compute beta * density, the
shrinkage that llama.cpp's converter suffers from. The exact betas go into the safetensors
metadata (`bitnet_pack.betas`), so our own reader makes packed -> bf16 -> packed lossless.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...containers.outputs import StagedDir
from ...containers.safetensors import TensorPlan
from ...containers.shards import ShardedWriter
from ...errors import UsageError
from ...families.arch import BITNET_2B4T, ONEBITLLM, Family
from ...formats import fastpath
from ...formats.dtypes import bf16_to_f32, f32_to_bf16
from ...formats.layouts import get_layout
from ...formats.ternary import TernaryWeight
from ..sources import Checkpoint, Entry, Tensor
from ..sources.gguf import is_lossy_float
from ..sources.hf import BETAS_KEY, master_bits
from . import PlannedTensor, Sink
from .direct_io import open_direct

PACKED_CONFIG = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}
SCALE_DTYPES = {"bf16": "BF16", "f32": "F32"}
MASTER_CONFIG = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
INVERSE_PACKED_CONFIG = {"quant_method": "bitnet", "modules_to_not_convert": ["lm_head"]}


def quantization_config(family: Family, packed: bool, source_config: dict) -> dict | None:
    """The quantization_config a family's packed or master checkpoint carries (None: none)."""
    if family is ONEBITLLM and not packed:
        return None
    if family.packed_scale == "beta":
        return dict(PACKED_CONFIG if packed else MASTER_CONFIG)
    kept = (source_config.get("quantization_config") or {}).get("modules_to_not_convert")
    config = dict(INVERSE_PACKED_CONFIG if packed else {**MASTER_CONFIG, **INVERSE_PACKED_CONFIG})
    return config | ({"modules_to_not_convert": kept} if kept else {})


def stored_scale(family: Family, beta: np.float32) -> np.float32:
    """weight_scale as the family's packed checkpoints hold it: beta, or fp32 1/beta."""
    return np.float32(beta) if family.packed_scale == "beta" else np.float32(1) / np.float32(beta)


def stored_float_type(entry: Entry) -> str:
    """BF16, except for tensors dequantized from a GGUF block type (Q8_0, Q6_K, ...): F32 keeps
    exactly the values the GGUF held, where bf16 would round them a second time."""
    return "F32" if is_lossy_float(entry.dtype) else "BF16"


class HFSink(Sink):
    OUTTYPES = ("hf-packed", "bf16")  # the transformers checkpoints this sink writes

    def __init__(self, path: Path, outtype: str, *, force: bool = False, max_shard_size: int | None = None,
                 inputs: list[Path] | None = None, extra_metadata: dict[str, str] | None = None,
                 scale_dtype: str = "bf16"):
        if outtype not in self.OUTTYPES:
            raise UsageError(f"the transformers sink writes {' and '.join(self.OUTTYPES)}, not {outtype!r}")
        if scale_dtype not in SCALE_DTYPES:
            raise UsageError(f"--scale-dtype must be one of {', '.join(SCALE_DTYPES)}, got {scale_dtype!r}")
        self.path = Path(path)
        self.packed = outtype == "hf-packed"
        self.scale_dtype = SCALE_DTYPES[scale_dtype]
        self.notes: list[str] = []
        self._rounded, self._worst = 0, 0.0
        self.force, self.max_shard_size, self.inputs = force, max_shard_size, inputs or []
        self.extra_metadata = extra_metadata or {}
        self.betas: dict[str, str] = {}
        self.family: Family = BITNET_2B4T  # the source's, from plan() / begin()

    def tensor_plans(self, entries: list[Entry]) -> list[TensorPlan]:
        plans = []
        for entry in entries:
            if entry.kind == "linear" and self.packed:
                plans.append(TensorPlan(entry.name, "U8", get_layout("hf").stored_shape(entry.shape)))
                plans.append(TensorPlan(entry.name + "_scale", self.scale_dtype, (1,)))
            else:
                plans.append(TensorPlan(entry.name, self._float_dtype(entry), entry.shape))
        return plans

    def _float_dtype(self, entry: Entry) -> str:
        """BF16, or for families with float32 checkpoints (1bitLLM) the dtype as read, so F32
        norms and F16 embeddings from a GGUF come back unrounded. Master projections: BF16."""
        if entry.kind == "linear":
            return "BF16"
        if self.family.float_dtype is not None:
            return stored_float_type(entry)
        return entry.dtype if entry.dtype in ("BF16", "F16", "F32") else "F32"

    def plan(self, source: Checkpoint, entries: list[Entry]) -> list[PlannedTensor]:
        self.family = source.family
        return [PlannedTensor(p.name, "hf" if p.dtype == "U8" else p.dtype, p.shape, p.nbytes)
                for p in self.tensor_plans(entries)]

    def begin(self, source: Checkpoint, entries: list[Entry]) -> None:
        self.source = source
        self.staged = StagedDir(self.path, force=self.force, inputs=self.inputs)
        self.family = source.family
        metadata = {"format": "pt", **self.extra_metadata}
        if not self.packed:  # fixed-width placeholders, filled in at finish()
            self.betas = {e.name: "0x00000000" for e in entries if e.kind == "linear"}
            metadata[BETAS_KEY] = json.dumps(self.betas, sort_keys=True)
        self.metadata = metadata
        self.writer = ShardedWriter(self.staged.temp, self.tensor_plans(entries), metadata, self.max_shard_size,
                                    direct=open_direct if fastpath.streaming() else None)

    def put(self, entry: Entry, value: TernaryWeight | Tensor) -> None:
        if isinstance(value, TernaryWeight):
            self._put_linear(entry.name, value)
        else:
            dtype = self._float_dtype(entry)
            self.writer.write_chunks(entry.name, (part.converted(dtype)[0] for part in value.row_chunks()))

    def _put_linear(self, name: str, weight: TernaryWeight) -> None:
        if self.packed:
            self.writer.write(name, get_layout("hf").encode(weight))
            self.writer.write(name + "_scale", self._scale(weight.beta))
            return
        magnitude = master_bits(weight.codes, weight.beta)
        negative = weight.codes < 0
        if getattr(weight, "negative_zeros", None) is not None:  # a latent master's -0.0 (LatentTernary)
            negative = negative | weight.negative_zeros
        signs = np.where(negative, np.uint16(0x8000), np.uint16(0))
        self.writer.write(name, np.where(weight.codes != 0, signs | magnitude, signs).astype(np.uint16))
        self.betas[name] = f"0x{int(np.float32(weight.beta).view(np.uint32)):08x}"

    def _scale(self, beta: np.float32) -> np.ndarray:
        """weight_scale as stored: f32 keeps beta exactly; bf16 (what transformers writes) rounds
        fp32 betas (masters, bitnet.cpp's I2_S), which is counted and said at the end."""
        value = np.array([stored_scale(self.family, beta)], np.float32)  # beta, or 1/beta (Llama-style)
        stored = value if self.scale_dtype == "F32" else f32_to_bf16(value)
        back = stored_scale(self.family, value[0] if self.scale_dtype == "F32" else bf16_to_f32(stored)[0])
        if back != np.float32(beta):  # what a reader gets back is not this beta
            self._rounded += 1
            self._worst = max(self._worst, abs(float(back) / float(beta) - 1))
        return stored

    def finish(self) -> Path:
        if self._rounded:
            self.notes.append(f"weight_scale is bf16: rounded {self._rounded} fp32 betas (largest relative change "
                              f"{self._worst:.1e}), so verify against the source can differ; --scale-dtype f32 "
                              "keeps them exactly (transformers loads it)")
        if not self.packed:
            self.metadata[BETAS_KEY] = json.dumps(self.betas, sort_keys=True)
        self.writer.finish(self.metadata)
        self._write_side_files()
        names = sorted(p.name for p in self.staged.temp.iterdir())
        final = self.staged.commit()
        self.files = [(str(final), "checkpoint")] + [(str(final / name), "file") for name in names]
        return final

    def _write_side_files(self) -> None:
        config = {**self.source.config, **self.source.family.identity}
        config.pop("quantization_config", None)
        chosen = quantization_config(self.source.family, self.packed, self.source.config)
        if chosen is not None:
            config["quantization_config"] = chosen
        (self.staged.temp / "config.json").write_text(json.dumps(config, indent=2))
        for name, data in self.source.aux_files.items():
            (self.staged.temp / name).write_bytes(data)

    def abort(self) -> None:
        if hasattr(self, "writer"):
            self.writer.abort()
        if hasattr(self, "staged"):
            self.staged.abort()
