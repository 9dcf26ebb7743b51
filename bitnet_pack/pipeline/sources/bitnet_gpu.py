"""bitnet.cpp's W2A8 GPU checkpoint in: the directory `gpu/generate.py` loads.

    model_state_int2.pt   fused int2 projections (layouts/bitnet_gpu.py) + bf16 weight_scale[4],
                          bf16 norms, tok_embeddings and output (= the tied embedding)
    model_state_fp16.pt   the same names, projections as bf16 fake-quant (prefill); not read here
    config.json           the model's (bitnet.cpp's converter reads the bf16 master's folder,
                          where it is); the .pt files alone do not say heads, rope or eps

Only tensors are ever unpickled (`torch.load(..., weights_only=True)`); where the
`.safetensors` twins are present they are read instead, without torch. q/k rows come back
from the interleaved rope pairs to transformers' rotate-half order (`arch.permute_rows`),
and each fused part gets the beta of its weight_scale slot.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

from ...containers.safetensors import SafetensorsFile
from ...errors import FormatError, HeaderInvalid, MissingFile, MissingTensor, ShapeError, UsageError
from ...families.arch import Dims, permute_rows
from ...formats.layouts import get_layout
from ...formats.layouts.bitnet_gpu import NAME, SCALE_SLOTS
from ...formats.ternary import TernaryWeight
from . import Checkpoint, Entry, Tensor, check_architecture, read_aux_files

INT2, FP16 = "model_state_int2", "model_state_fp16"
# fused GPU tensor -> its parts, in row order: (transformers projection, the config size of its rows)
FUSED = {"attention.wqkv": (("self_attn.q_proj", "q"), ("self_attn.k_proj", "kv"), ("self_attn.v_proj", "kv")),
         "attention.wo": (("self_attn.o_proj", "hidden"),),
         "feed_forward.w13": (("mlp.gate_proj", "ffn"), ("mlp.up_proj", "ffn")),
         "feed_forward.w2": (("mlp.down_proj", "hidden"),)}
LAYER_FLOATS = {"input_layernorm.weight": "attention_norm.weight",
                "post_attention_layernorm.weight": "ffn_norm.weight",
                "self_attn.attn_sub_norm.weight": "attention.attn_sub_norm.weight",
                "mlp.ffn_sub_norm.weight": "feed_forward.ffn_sub_norm.weight"}
GLOBAL_FLOATS = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight"}
TIED_OUTPUT = "output.weight"
ROPE_PERMUTED = {"self_attn.q_proj": "heads", "self_attn.k_proj": "kv_heads"}  # rows as (h, d, pair)
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")


def is_gpu_checkpoint(path: Path) -> bool:
    """A directory holding model_state_int2.pt (or its .safetensors twin) and no transformers
    weights; a path to model_state_int2.* itself."""
    if path.is_file():
        return path.stem == INT2 and path.suffix in (".pt", ".safetensors")
    has_state = any((path / f"{INT2}{suffix}").is_file() for suffix in (".pt", ".safetensors"))
    has_weights = (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
    return path.is_dir() and has_state and not has_weights


def raw_state_files(path: Path) -> list[SafetensorsFile]:
    """The .safetensors twins of a GPU checkpoint, for `inspect --raw`; a torch pickle is not
    shown byte by byte (UsageError)."""
    directory = path.parent if path.is_file() else path
    twins = [directory / f"{stem}.safetensors" for stem in (INT2, FP16)]
    if not twins[0].is_file():
        raise UsageError(f"--raw shows GGUF and safetensors containers; {INT2}.pt is a torch pickle (no "
                         f"{INT2}.safetensors beside it): inspect it without --raw", path=directory)
    return [SafetensorsFile(twin) for twin in twins if twin.is_file()]


def gpu_name(hf_name: str) -> tuple[str, int] | None:
    """transformers projection name -> (fused GPU tensor, part index), or None."""
    match = _LAYER.fullmatch(hf_name)
    if match is None:
        return None
    for fused, parts in FUSED.items():
        for index, (part, _) in enumerate(parts):
            if part == match.group(2):
                return f"layers.{match.group(1)}.{fused}.weight", index
    return None


def float_name(hf_name: str) -> str | None:
    if hf_name in GLOBAL_FLOATS:
        return GLOBAL_FLOATS[hf_name]
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    if match and match.group(2) in LAYER_FLOATS:
        return f"layers.{match.group(1)}.{LAYER_FLOATS[match.group(2)]}"
    return None


def rope_heads(part: str, config: dict) -> int | None:
    dims = Dims.of(config)
    kind = ROPE_PERMUTED.get(part)
    return None if kind is None else (dims.heads if kind == "heads" else dims.kv_heads)


def import_torch(why: str):
    try:
        import torch
    except ImportError:
        raise UsageError(f"{why} needs torch (pip install 'bitnet-pack[interop]', or torch alone)") from None
    return torch


class _State:
    """One state file's tensors as numpy (bf16 as uint16 bits), from the .safetensors twin if
    present, else the .pt through torch.load(weights_only=True)."""

    def __init__(self, directory: Path, stem: str):
        twin, pickle = directory / f"{stem}.safetensors", directory / f"{stem}.pt"
        if twin.is_file():
            self.file = SafetensorsFile(twin)
            self.source, self.names = twin, list(self.file.tensors)
            self._get = lambda name: (self.file.tensors[name].dtype, self.file.raw(name))
        elif pickle.is_file():
            self.source, self.tensors = pickle, self._unpickle(pickle)
            self.names = list(self.tensors)
            self._get = lambda name: self._numpy(name, self.tensors[name])
        else:
            raise MissingFile(f"no {stem}.pt or {stem}.safetensors", path=directory)

    @staticmethod
    def _unpickle(path: Path) -> dict:
        torch = import_torch(f"reading {path.name}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types for a bad or non-tensor pickle
            raise HeaderInvalid(f"not a tensors-only torch checkpoint ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200]})", path=path) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise HeaderInvalid("expected a dict of tensors", path=path)
        return state

    def _numpy(self, name: str, tensor) -> tuple[str, np.ndarray]:
        torch = import_torch("reading a .pt checkpoint")
        kinds = {torch.int8: ("I8", None), torch.bfloat16: ("BF16", torch.int16), torch.float16: ("F16", None),
                 torch.float32: ("F32", None)}
        if tensor.dtype not in kinds:
            raise FormatError(f"dtype {tensor.dtype} is not one bitnet.cpp's GPU checkpoint holds",
                              path=self.source, tensor=name)
        kind, view = kinds[tensor.dtype]
        array = (tensor.view(view) if view is not None else tensor).contiguous().numpy()
        return kind, array.view(np.uint16) if kind == "BF16" else array

    def get(self, name: str) -> tuple[str, np.ndarray]:
        if name not in self.names:
            raise MissingTensor(f"{name!r} is missing", path=self.source)
        return self._get(name)


class GPUCheckpoint(Checkpoint):
    kind = "bitnet-gpu"
    layout = NAME
    claims = staticmethod(is_gpu_checkpoint)  # the hooks the layout's entry (reader=) names
    raw_files = staticmethod(raw_state_files)

    def __init__(self, path: Path):
        self.path = Path(path).parent if Path(path).is_file() else Path(path)
        config_path = self.path / "config.json"
        if not config_path.is_file():
            raise MissingFile("config.json is missing: the GPU checkpoint's .pt files do not record heads, "
                              "rope_theta or rms_norm_eps; put the model's config.json beside them", path=self.path)
        try:
            self.config = json.loads(config_path.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise HeaderInvalid(f"config.json is not valid JSON ({exc})", path=config_path) from None
        if not isinstance(self.config, dict):
            raise HeaderInvalid("config.json is not a JSON object", path=config_path)
        self.config.pop("quantization_config", None)  # the master's; this model is packed
        self.family = check_architecture(self.config, config_path)
        if self.family.name != "2b4t":
            raise UsageError(f"bitnet.cpp's GPU checkpoint holds 2B4T-style models, but config.json describes "
                             f"{self.family.title}", path=config_path)
        self.state = _State(self.path, INT2)
        self.notes = [f"family {self.family.name}: {self.family.title}",
                      f"read bitnet.cpp's GPU checkpoint from {self.state.source.name} (weight_scale slots are bf16)"]

    @functools.cached_property
    def aux_files(self) -> dict[str, bytes]:
        return read_aux_files(self.path)

    def entries(self) -> list[Entry]:
        shapes = self.family.tensor_shapes(self.config)
        entries = []
        for name, shape in shapes.items():
            fused = gpu_name(name)
            if fused is not None:
                entries.append(Entry(name, shape, "linear", NAME, int(np.prod(shape)) // 4,
                                     lambda n=name: self._load_linear(n)))
                continue
            stored = float_name(name)
            if stored is None:
                raise UsageError(f"{name} has no place in bitnet.cpp's GPU checkpoint", path=self.path)
            dtype, data = self.state.get(stored)
            if tuple(data.shape) != tuple(shape):
                raise ShapeError(f"{stored} is {list(data.shape)}, config.json implies {list(shape)}",
                                 path=self.state.source, tensor=stored)
            entries.append(Entry(name, shape, "tensor", dtype, data.nbytes, lambda d=dtype, a=data: Tensor(d, a)))
        self._check_names(shapes)
        return entries

    def _check_names(self, shapes: dict) -> None:
        """Every stored tensor is one we read, and output.weight is the tied embedding (the GPU
        model multiplies by output.weight; a different one would be dropped here)."""
        known = {float_name(n) for n in shapes} | {TIED_OUTPUT}
        for name in shapes:
            fused = gpu_name(name)
            if fused is not None:
                known |= {fused[0], fused[0].replace(".weight", ".weight_scale")}
        extra = [n for n in self.state.names if n not in known]
        if extra:
            raise FormatError(f"{len(extra)} tensors bitnet.cpp's GPU model does not have, e.g. {extra[0]!r}",
                              path=self.state.source)
        if TIED_OUTPUT in self.state.names:
            embedding = self.state.get(GLOBAL_FLOATS["model.embed_tokens.weight"])[1]
            if not np.array_equal(self.state.get(TIED_OUTPUT)[1], embedding):
                raise FormatError("output.weight differs from tok_embeddings.weight; a 2B4T model ties them",
                                  path=self.state.source, tensor=TIED_OUTPUT)

    def _load_linear(self, name: str) -> TernaryWeight:
        fused, index = gpu_name(name)
        parts = FUSED[fused.split(".", 2)[2].removesuffix(".weight")]
        dims = Dims.of(self.config)
        sizes = [dims.size(size) for _, size in parts]
        dtype, data = self.state.get(fused)
        _, scale = self.state.get(fused.replace(".weight", ".weight_scale"))
        if dtype != "I8" or scale.size != SCALE_SLOTS:
            raise ShapeError(f"expected int8 codes and a bf16 weight_scale of {SCALE_SLOTS}, got {dtype} and "
                             f"{scale.size} values", path=self.state.source, tensor=fused)
        k = data.shape[1] * 4 if data.ndim == 2 else 0
        codes = self._fused_codes(fused, (sum(sizes), k))
        start = sum(sizes[:index])
        rows = codes[start:start + sizes[index]]
        heads = rope_heads(parts[index][0], self.config)
        if heads is not None:
            rows = permute_rows(rows, heads, to_gguf=False)
        beta = get_layout(NAME).read_beta(Tensor("BF16", scale[index:index + 1]).f32()[0], rows, tensor=name)
        return TernaryWeight(np.ascontiguousarray(rows), beta)

    def _fused_codes(self, fused: str, shape: tuple[int, int]) -> np.ndarray:
        """The fused tensor's codes (beta applied per part later); the last one is kept, since
        its parts are read one after another."""
        cached = getattr(self, "_last", None)
        if cached is not None and cached[0] == fused:
            return cached[1]
        _, data = self.state.get(fused)
        if tuple(data.shape) != (shape[0], shape[1] // 4):
            raise ShapeError(f"{fused} is {list(data.shape)}, config.json implies {[shape[0], shape[1] // 4]}",
                             path=self.state.source, tensor=fused)
        codes = get_layout(NAME).decode(data, shape, beta=1.0).codes
        self._last = (fused, codes)
        return codes
