"""bitnet.cpp's W2A8 GPU checkpoint out: a directory `gpu/generate.py` loads.

Writes what microsoft/BitNet's `gpu/convert_safetensors.py` + `gpu/convert_checkpoint.py`
write (names, order, dtypes; see checkpoints/bitnet_gpu.py), plus the model's config.json and
tokenizer files, which generate.py ignores and our reader needs:

- q/k rows into interleaved rope pairs, q/k/v and gate/up fused, packed by layouts/bitnet_gpu.py;
  weight_scale bf16[4]; norms and the embedding (twice: tok_embeddings, output) as bf16.
- From a bf16 master, each part is ternarized as bitnet.cpp's converter does it, in bf16
  arithmetic (`gpu_quantize`): the tensors equal its output, and a note counts the codes that
  differ from transformers' float32 absmean (what every other layout gets). From any other
  source the codes are kept and beta is rounded to the nearest bf16 (a note counts them).

Tensors are staged in scratch memory-mapped files, so memory holds the tensor in flight;
torch.save then streams them into the two pickles.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...containers.outputs import StagedDir
from ...errors import UsageError
from ...families.arch import Dims, permute_rows
from ...formats.dtypes import bf16_to_f32, f32_to_bf16
from ...formats.layouts import get_layout
from ...formats.layouts.bitnet_gpu import NAME, SCALE_SLOTS, fake_quant_bits, slot_of
from ...formats.ternary import TernaryWeight
from ..sources import Checkpoint, Entry, Tensor
from ..sources.bitnet_gpu import (
    FP16,
    FUSED,
    INT2,
    TIED_OUTPUT,
    float_name,
    gpu_name,
    import_torch,
    rope_heads,
)
from . import PlannedTensor, Sink

SCRATCH = ".scratch"
EMBEDDING = "model.embed_tokens.weight"


class GPUSink(Sink):
    def __init__(self, path: Path, outtype: str = NAME, *, force: bool = False, inputs: list[Path] | None = None,
                 extra_metadata: dict[str, str] | None = None, **unused: object):
        if unused:
            key = next(iter(unused))
            raise UsageError(f"--{key.replace('_', '-')} does not apply to --outtype {NAME} (a directory of torch "
                             "pickles)")
        import_torch(f"--outtype {NAME} (torch pickles)")
        self.path, self.force, self.inputs = Path(path), force, inputs or []
        self.layout = get_layout(NAME)
        self.notes: list[str] = []
        self._differing: dict[str, int] = {}
        self._rounded, self._worst, self._floats_rounded = 0, 0.0, 0

    # -- planning -------------------------------------------------------------------------
    def _check_source(self, source: Checkpoint) -> None:
        refusal = self.layout.family_refusal(source.family)
        if refusal is not None:
            raise UsageError(refusal)

    def _fused_shapes(self, entries: list[Entry]) -> dict[str, tuple[int, int]]:
        shapes: dict[str, list[int]] = {}
        for entry in entries:
            if entry.kind == "linear":
                fused, _ = gpu_name(entry.name)
                rows, cols = shapes.get(fused, [0, entry.shape[1]])
                shapes[fused] = [rows + entry.shape[0], cols]
        return {name: tuple(shape) for name, shape in shapes.items()}

    def plan(self, source: Checkpoint, entries: list[Entry]) -> list[PlannedTensor]:
        self._check_source(source)
        planned = []
        for fused, shape in self._fused_shapes(entries).items():
            planned += [PlannedTensor(fused, NAME, shape, self.layout.nbytes(shape)),
                        PlannedTensor(fused.replace(".weight", ".weight_scale"), "BF16", (SCALE_SLOTS,), 8),
                        PlannedTensor(f"{FP16}:{fused}", "BF16", shape, 2 * shape[0] * shape[1])]
        for entry in entries:
            if entry.kind != "linear":
                names = [float_name(entry.name)] + ([TIED_OUTPUT] if entry.name == EMBEDDING else [])
                size = 2 * 2 * int(np.prod(entry.shape))  # bf16, in both files
                planned += [PlannedTensor(n, "BF16", entry.shape, size) for n in names]
        return planned

    # -- writing --------------------------------------------------------------------------
    def begin(self, source: Checkpoint, entries: list[Entry]) -> None:
        self._check_source(source)
        self.source, self.config = source, source.config
        self.staged = StagedDir(self.path, force=self.force, inputs=self.inputs)
        (self.staged.temp / SCRATCH).mkdir()
        self.shapes = self._fused_shapes(entries)
        self.parts_left = {fused: sum(1 for e in entries if e.kind == "linear" and gpu_name(e.name)[0] == fused)
                           for fused in self.shapes}
        self.pending: dict[str, dict[int, tuple[TernaryWeight, np.ndarray]]] = {}
        self.stored: dict[str, np.ndarray] = {}  # key (fp16 projections: "model_state_fp16:key") -> data
        for entry in entries:
            if entry.kind == "linear":
                continue
            if float_name(entry.name) is None:
                raise UsageError(f"{entry.name} has no place in bitnet.cpp's GPU checkpoint")

    def _scratch(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        self._scratch_files = getattr(self, "_scratch_files", 0) + 1
        path = self.staged.temp / SCRATCH / f"{self._scratch_files}.npy"
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    def put(self, entry: Entry, value: TernaryWeight | Tensor) -> None:
        if isinstance(value, TernaryWeight):
            self._put_part(entry, value)
            return
        data, _ = value.converted("BF16")
        if value.dtype not in ("BF16",):
            changed = int(np.count_nonzero(bf16_to_f32(data) != value.f32()))
            self._floats_rounded += changed
        key = float_name(entry.name)
        array = self._scratch(tuple(entry.shape), "<u2")
        array[...] = np.asarray(data).reshape(entry.shape)
        self.stored[key] = array
        if entry.name == EMBEDDING:
            self.stored[TIED_OUTPUT] = array

    def _put_part(self, entry: Entry, weight: TernaryWeight) -> None:
        fused, index = gpu_name(entry.name)
        weight, negative_zero = self._as_bitnet_cpp(entry, weight)
        part = FUSED[fused.split(".", 2)[2].removesuffix(".weight")][index][0]
        heads = rope_heads(part, self.config)
        if heads is not None:  # transformers' rotate-half halves -> interleaved pairs
            weight = TernaryWeight(permute_rows(weight.codes, heads, to_gguf=True), weight.beta)
            negative_zero = permute_rows(negative_zero, heads, to_gguf=True) if negative_zero is not None else None
        self.pending.setdefault(fused, {})[index] = (weight, fake_quant_bits(weight, negative_zero))
        self.parts_left[fused] -= 1
        if self.parts_left[fused] == 0:
            self._write_fused(fused, self.pending.pop(fused))

    def _as_bitnet_cpp(self, entry: Entry, weight: TernaryWeight) -> tuple[TernaryWeight, np.ndarray | None]:
        """bitnet.cpp's own ternarization from a bf16 master; else the codes given, beta rounded."""
        requantized = self.layout.quantize_master(self.source, entry)
        if requantized is not None:
            ours, negative_zero = requantized
            differing = int(np.count_nonzero(ours.codes != weight.codes))
            if differing:
                self._differing[entry.name] = differing
            return ours, negative_zero
        slot = slot_of(weight.beta)
        if slot != np.float32(weight.beta):
            self._rounded += 1
            self._worst = max(self._worst, abs(float(slot) / float(weight.beta) - 1))
        return TernaryWeight(weight.codes, slot), None

    def _write_fused(self, fused: str, parts: dict[int, tuple[TernaryWeight, np.ndarray]]) -> None:
        ordered = [parts[i] for i in sorted(parts)]
        codes = np.concatenate([w.codes for w, _ in ordered])
        packed = self._scratch(self.layout.stored_shape(codes.shape), "i1")
        packed[...] = self.layout.encode(TernaryWeight(codes, np.float32(1)))
        scale = np.zeros(SCALE_SLOTS, np.uint16)
        scale[:len(ordered)] = f32_to_bf16(np.array([w.beta for w, _ in ordered], np.float32))
        fake = self._scratch(codes.shape, "<u2")
        fake[...] = np.concatenate([bits for _, bits in ordered])
        self.stored[fused] = packed
        self.stored[fused.replace(".weight", ".weight_scale")] = scale
        self.stored[f"{FP16}:{fused}"] = fake

    # -- the files ------------------------------------------------------------------------
    def _order(self) -> list[str]:
        """convert_safetensors.py's order: per layer wqkv, wo, the four norms, w13, w2; then
        tok_embeddings, output, norm."""
        keys = []
        for layer in range(Dims.of(self.config).layers):
            fused = [f"layers.{layer}.{name}.weight" for name in FUSED]
            keys += fused[:2] + [f"layers.{layer}.{n}" for n in (
                "attention_norm.weight", "ffn_norm.weight", "attention.attn_sub_norm.weight",
                "feed_forward.ffn_sub_norm.weight")] + fused[2:]
        return keys + ["tok_embeddings.weight", TIED_OUTPUT, "norm.weight"]

    def _states(self) -> tuple[dict, dict]:
        torch = import_torch(f"--outtype {NAME}")
        int2, fp16 = {}, {}
        for key in self._order():
            if key in self.shapes:
                int2[key] = torch.from_numpy(np.asarray(self.stored[key]))
                scale = key.replace(".weight", ".weight_scale")
                int2[scale] = self._bf16_tensor(torch, self.stored[scale])
                fp16[key] = self._bf16_tensor(torch, self.stored[f"{FP16}:{key}"])
            else:
                int2[key] = fp16[key] = self._bf16_tensor(torch, self.stored[key])
        return int2, fp16

    @staticmethod
    def _bf16_tensor(torch, bits: np.ndarray):
        return torch.from_numpy(np.asarray(bits).view(np.int16)).view(torch.bfloat16)

    def finish(self) -> Path:
        torch = import_torch(f"--outtype {NAME}")
        int2, fp16 = self._states()
        torch.save(int2, self.staged.temp / f"{INT2}.pt")
        torch.save(fp16, self.staged.temp / f"{FP16}.pt")
        del int2, fp16
        self.stored.clear()
        for path in (self.staged.temp / SCRATCH).iterdir():
            path.unlink()
        (self.staged.temp / SCRATCH).rmdir()
        self._write_side_files()
        self._add_notes()
        return self.staged.commit()

    def _write_side_files(self) -> None:
        config = {**self.source.config, **self.source.family.identity}
        config.pop("quantization_config", None)
        (self.staged.temp / "config.json").write_text(json.dumps(config, indent=2))
        for name, data in self.source.aux_files.items():
            (self.staged.temp / name).write_bytes(data)

    def _add_notes(self) -> None:
        if self._differing:
            total = sum(self._differing.values())
            self.notes.append(f"ternarized the bf16 master as bitnet.cpp's GPU converter does (in bf16 arithmetic): "
                              f"{total} codes in {len(self._differing)} projections differ from transformers' "
                              "float32 absmean, which the other layouts use")
        if self._rounded:
            self.notes.append(f"weight_scale is bf16: rounded {self._rounded} betas to the nearest bf16 (largest "
                              f"relative change {self._worst:.1e}), so verify against the source can differ")
        if self._floats_rounded:
            self.notes.append(f"norms and embeddings are bf16 here: {self._floats_rounded} values rounded")

    def abort(self) -> None:
        if hasattr(self, "staged"):
            self.staged.abort()
