"""transformers checkpoints: bf16 masters and packed 1.58-bit directories.

What `quantization_config` says decides how projections are read:

    absent / quantization_mode "online"      bf16 master: ternarized on load (absmean)
    linear_class "autobitlinear", "offline"  packed: uint8 [out/4, in] + weight_scale = beta
    linear_class "bitlinear" (the default)   packed: uint8 [out/4, in] + weight_scale = 1/beta

config.json's architectures / model_type decide the family (`arch.family_of_config`): 2B4T,
1bitLLM (latent fp32/fp16 masters, no quantization_config) or Llama-style (LlamaForCausalLM +
quant_method bitnet, BitLinear's 1/beta by default).

A master that bitnet-pack wrote from a packed checkpoint records each exact beta in the
safetensors metadata; when the weights still hold exactly what we wrote, that beta is used,
which makes packed -> bf16 -> packed lossless (see `sinks.hf`).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...containers.shards import SafetensorsDir
from ...errors import HeaderInvalid, MissingFile, ShapeError, UnknownTensorType
from ...families.arch import out_features
from ...formats import fastpath
from ...formats.dtypes import f32_to_bf16
from ...formats.layouts import get_layout
from ...formats.ternary import TernaryWeight, check_ternary
from . import Checkpoint, Entry, StoredProjection, Tensor, check_architecture, is_projection, read_aux_files

FLOAT_DTYPES = ("BF16", "F16", "F32")
BETAS_KEY = "bitnet_pack.betas"


class HFCheckpoint(Checkpoint):
    def __init__(self, directory: Path):
        self.path = Path(directory)
        config_path = self.path / "config.json"
        if not config_path.is_file():
            raise MissingFile("config.json is missing: is this a transformers checkpoint?", path=self.path)
        try:
            self.config = json.loads(config_path.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise HeaderInvalid(f"config.json is not valid JSON ({type(exc).__name__}: {exc})",
                                path=config_path) from None
        if not isinstance(self.config, dict):
            raise HeaderInvalid(f"config.json holds a JSON {type(self.config).__name__}, not an object",
                                path=config_path)
        self.family = check_architecture(self.config, config_path)
        self.files = SafetensorsDir(self.path)
        self.notes = [f"family {self.family.name}: {self.family.title}"]
        self._read_quantization_config()
        self.recorded_betas = _recorded_betas(self.files.metadata)

    @functools.cached_property
    def aux_files(self) -> dict[str, bytes]:
        """Tokenizer and generation files carried over unchanged, read on first use."""
        return read_aux_files(self.path)

    def _read_quantization_config(self) -> None:
        qc = self.config.get("quantization_config") or {}
        packed = qc.get("quant_method") == "bitnet" and qc.get("quantization_mode", "offline") == "offline"
        self.kind = "hf-packed" if packed else "bf16-master"
        self.layout = "hf" if packed else "bf16"
        self.linear_class = qc.get("linear_class", "bitlinear")
        if packed and self.linear_class not in ("bitlinear", "autobitlinear"):  # it decides beta or 1/beta
            raise HeaderInvalid(f"config.json quantization_config linear_class {self.linear_class!r} is not "
                                "'bitlinear' (weight_scale = 1/beta) or 'autobitlinear' (beta)", path=self.path)
        if packed and self.linear_class == "bitlinear":
            self.notes.append("read linear_class 'bitlinear': weight_scale holds 1/beta (divided)")
        elif packed:
            self.notes.append("read linear_class 'autobitlinear', offline: weight_scale holds beta (multiplied)")
        else:
            self.notes.append("read a master: projections ternarized by absmean on load")

    def entries(self) -> list[Entry]:
        entries = []
        for name in self.files.where:
            if name.endswith(".weight_scale") and self.kind == "hf-packed":
                continue
            info = self.files.info(name)
            if is_projection(name):
                entries.append(self._linear_entry(name, info))
            elif info.dtype in FLOAT_DTYPES:
                entries.append(Entry(name, info.shape, "tensor", info.dtype, info.nbytes,
                                     lambda n=name, d=info.dtype: Tensor(d, self.files.raw(n))))
            else:
                raise UnknownTensorType(f"{info.dtype} is not a float dtype and the tensor is not a "
                                        "projection", path=self.path, tensor=name)
        return entries

    def _linear_entry(self, name: str, info) -> Entry:
        if self.kind == "bf16-master":
            if info.dtype not in FLOAT_DTYPES or len(info.shape) != 2:
                raise ShapeError(f"a master projection is a 2-D float, got {info.dtype}{list(info.shape)}",
                                 path=self.path, tensor=name)
            return Entry(name, info.shape, "linear", info.dtype, info.nbytes, lambda: self._load_master(name))
        scale = name + "_scale"
        if scale not in self.files.where:
            raise MissingFile(f"packed projection has no {scale!r}", path=self.path, tensor=name)
        if self.files.info(scale).dtype not in FLOAT_DTYPES:
            raise UnknownTensorType(f"weight_scale is {self.files.info(scale).dtype}, not a float dtype "
                                    f"({', '.join(FLOAT_DTYPES)})", path=self.path, tensor=scale)
        shape = self._packed_shape(name, info)
        return Entry(name, shape, "linear", info.dtype, info.nbytes + self.files.info(scale).nbytes,
                     lambda: self._load_packed(name, shape))

    def _packed_shape(self, name: str, info) -> tuple[int, int]:
        """out_features comes from config: [out/4, in] loses out % 4."""
        if info.dtype != "U8":  # transformers also loads unpacked float-ternary weights
            return info.shape
        out = out_features(self.config, name)
        if -(-out // 4) != info.shape[0]:
            raise ShapeError(f"packed rows {info.shape[0]} do not match out_features {out} from config.json "
                             f"(expected {-(-out // 4)})", path=self.path, tensor=name)
        return (out, info.shape[1])

    def _load_master(self, name: str) -> TernaryWeight:
        raw = self.files.raw(name)
        dtype = self.files.info(name).dtype
        ternary = fastpath.ternarize_stored(raw, dtype, tensor=name)
        recorded = self.recorded_betas.get(name)
        is_bf16 = dtype == "BF16"
        if recorded is not None and is_bf16 and _holds_what_we_wrote(raw, ternary.codes, recorded):
            ternary = TernaryWeight(ternary.codes, recorded)
        if self.family.float_dtype is None:  # a latent checkpoint (1bitLLM)
            return LatentTernary.of(ternary, raw, dtype)
        return ternary

    def _packed_beta(self, name: str) -> np.float32:
        """beta from `<name>_scale`: its value (autobitlinear) or reciprocal (bitlinear)."""
        raw_scale = self.files.raw(name + "_scale")
        stored = Tensor(self.files.info(name + "_scale").dtype, raw_scale).f32().reshape(-1)
        if stored.size != 1:
            raise ShapeError(f"weight_scale must be one value, got {stored.size}", path=self.path,
                             tensor=name + "_scale")
        usable = np.isfinite(stored[0]) and stored[0] > 0  # others are checked with the codes
        return np.float32(1) / stored[0] if self.linear_class == "bitlinear" and usable else stored[0]

    def stored(self, entry: Entry) -> StoredProjection | None:
        if self.kind != "hf-packed" or self.files.info(entry.name).dtype != "U8":
            return None
        beta = self._packed_beta(entry.name)
        if not (np.isfinite(beta) and beta > 0):  # the decode path judges it with the codes
            return None
        return StoredProjection("hf", self.files.raw(entry.name), tuple(entry.shape), beta)

    def _load_packed(self, name: str, shape: tuple[int, int]) -> TernaryWeight:
        beta = self._packed_beta(name)
        data = self.files.raw(name)
        if self.files.info(name).dtype == "U8":
            return get_layout("hf").decode(data, shape, beta=beta)
        codes = Tensor(self.files.info(name).dtype, data).f32()
        check_ternary(codes, tensor=name)
        return TernaryWeight(codes.astype(np.int8), get_layout("hf").read_beta(beta, codes, tensor=name))

    def release(self, entry: Entry) -> None:
        for name in (entry.name, entry.name + "_scale"):
            if name in self.files.where:
                fastpath.drop_mapped_pages(self.files.raw(name))

    def close(self) -> None:
        self.files.close()


def _recorded_betas(metadata: dict[str, str]) -> dict[str, np.float32]:
    if BETAS_KEY not in metadata:
        return {}
    try:
        table = json.loads(metadata[BETAS_KEY])
        return {name: np.uint32(int(bits, 16)).view(np.float32) for name, bits in table.items()}
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError):
        return {}  # not ours, or edited: the betas are computed from the weights


def master_value(codes: np.ndarray, beta: np.float32) -> np.float32:
    """The one magnitude a master written from ternary holds: beta / density, so that
    transformers' absmean (mean|W| = magnitude * density) gives back beta."""
    nonzero = int(np.count_nonzero(codes))
    return np.float32(beta) if nonzero == 0 else np.float32(np.float64(beta) * codes.size / nonzero)


def master_bits(codes: np.ndarray, beta: np.float32) -> np.uint16:
    """The bf16 bits of `master_value`: what the writer stores and the reader expects."""
    return f32_to_bf16(np.array([master_value(codes, beta)], np.float32))[0]


def _holds_what_we_wrote(raw: np.ndarray, codes: np.ndarray, beta: np.float32) -> bool:
    expected = master_bits(codes, beta)
    magnitude = raw.view(np.uint16) & np.uint16(0x7FFF)
    return bool(np.all(np.where(codes != 0, magnitude == expected, magnitude == 0)))


@dataclass(frozen=True, eq=False)
class LatentTernary(TernaryWeight):
    """Ternary weights of a latent float master that remember which zero codes came from
    negative weights: both runtimes' converters fake-quantise as round(W*s)/s, which keeps
    the sign (-0.0), so f32/f16 GGUFs of 1bitLLM hold -0.0 there. `dequantize` does the same;
    the codes and beta are those of `ternarize`."""

    negative_zeros: np.ndarray | None = None

    @classmethod
    def of(cls, ternary: TernaryWeight, raw: np.ndarray, dtype: str) -> LatentTernary:
        codes = ternary.codes
        sign = (raw.view(np.uint16) >> 15).astype(bool) if dtype == "BF16" else np.signbit(raw)
        return cls(codes, ternary.beta, sign.reshape(codes.shape) & (codes == 0))

    def dequantize(self) -> np.ndarray:
        values = super().dequantize()
        if self.negative_zeros is not None:
            values[self.negative_zeros] = np.float32(-0.0)
        return values
