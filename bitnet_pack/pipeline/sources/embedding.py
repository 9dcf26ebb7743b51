"""An embedding model on disk (transformers checkpoint or GGUF), as its tensors in file order.

Values are what the runtime multiplies with ("runtime values"): a Gemma3 norm other than
`*_norm_in` is 1 + w (float32 addition, as the converter stores it), so a GGUF's values are
read as they are and a transformers checkpoint's get the +1 on read. Projections are latent
float32 (transformers masters, f32/f16 GGUFs) or ternary (I2_S GGUFs, whose bytes the
encoder multiplies from directly).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...containers.gguf import GGUFFile
from ...errors import FormatError, HeaderInvalid, MissingFile, UnknownTensorType
from ...families.arch import (
    EMB_GEMMA3,
    EMBEDDING_FAMILIES,
    Family,
    family_of_config,
    family_of_gguf,
    is_projection,
)
from ...families.validate import check_layer_count
from ...formats.ternary import TernaryWeight
from . import StoredProjection, Tensor

POOLING = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
POOLING_KEYS = (("pooling_mode_mean_tokens", 1), ("pooling_mode_cls_token", 2), ("pooling_mode_lasttoken", 3))
DROPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


@dataclass
class EmbTensor:
    gguf: str                    # GGUF name
    hf: str                      # transformers name with `model.` (arch.Family names)
    shape: tuple[int, ...]       # torch order
    stored: str                  # dtype as stored: BF16, F16, F32, I2_S
    load: Callable[[], np.ndarray | TernaryWeight] = field(repr=False)
    raw: Callable[[], StoredProjection] | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        if self.gguf == "token_embd.weight":
            return "embed"
        return "norm" if self.gguf.endswith(("_norm.weight", "_norm_in.weight")) else "linear"


def is_native_gemma_norm(family: Family, gguf_name: str) -> bool:
    """A Gemma3 norm the converter stores as 1 + w (all but the BitLinear `*_norm_in`)."""
    return family is EMB_GEMMA3 and gguf_name.endswith("_norm.weight")


def is_embedding_model(path: Path) -> bool:
    """A transformers directory or GGUF whose family is one of the embedding families."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():  # a weights file names its checkpoint directory
        path = path.parent
    try:
        if path.is_dir() and (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
            return isinstance(config, dict) and family_of_config(config) in EMBEDDING_FAMILIES
        if path.is_file() and path.suffix == ".gguf":
            with GGUFFile(path, flavour="2025") as file:
                return family_of_gguf(file.architecture or "", file.get) in EMBEDDING_FAMILIES
    except Exception:  # noqa: BLE001 - anything unreadable is for the ordinary readers to report
        return False
    return False


class EmbSource:
    """path, family, config (transformers config.json), kind ("hf" / "gguf"), layout ("bf16",
    "f32", "f16", "i2_s", ...), pooling (GGUF pooling_type), tensors (file order)."""

    path: Path
    family: Family
    config: dict
    kind: str
    layout: str
    pooling: int
    tensors: list[EmbTensor]
    notes: list[str]

    def close(self) -> None:
        pass

    def __enter__(self) -> EmbSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedding_size(self) -> int:
        return int(self.config["hidden_size"])


def open_embedding(path: str | Path) -> EmbSource:
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        path = path.parent
    if path.is_dir():
        from .embedding_hf import HFEmbSource

        return HFEmbSource(path)
    if path.suffix == ".gguf" and path.is_file():
        from .embedding_gguf import GGUFEmbSource

        return GGUFEmbSource(path)
    raise MissingFile("not a checkpoint directory or .gguf file", path=path)


def read_pooling(directory: Path) -> tuple[int, str]:
    """The converter's pooling_type from modules.json / <Pooling path>/config.json: the first
    Pooling module only, mean before cls before last-token; none found is MEAN (1)."""
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        return 1, "no modules.json: pooling MEAN, as the converter defaults"
    try:
        modules = read_json_file(modules_path)
        pooling_module = next((m for m in modules if str(m["type"]).endswith("Pooling")), None)
    except (TypeError, KeyError) as exc:
        raise HeaderInvalid(f"modules.json is not a list of sentence-transformers modules ({exc})",
                            path=modules_path) from None
    config_path = _pooling_config(directory, pooling_module["path"], modules_path) if pooling_module else None
    if config_path is None or not config_path.is_file():
        return 1, "no Pooling config: pooling MEAN, as the converter defaults"
    pooling = read_json_file(config_path)
    if not isinstance(pooling, dict):
        raise HeaderInvalid(f"holds a JSON {type(pooling).__name__}, not an object", path=config_path)
    for key, value in POOLING_KEYS:
        if pooling.get(key):
            return value, f"pooling {POOLING[value].upper()} from {config_path.relative_to(directory)}"
    return 1, f"{config_path.relative_to(directory)} sets no mean/cls/last-token mode: pooling MEAN"


def _pooling_config(directory: Path, module_path: object, modules_path: Path) -> Path:
    """<module path>/config.json, a module path being a relative folder inside the checkpoint
    (never `..`, absolute, or a symlink out): refused before any open."""
    parts = Path(str(module_path)).parts
    if not isinstance(module_path, str) or Path(module_path).is_absolute() or ".." in parts or "\0" in module_path:
        raise HeaderInvalid(f"modules.json names the Pooling module path {module_path!r}: a folder inside the "
                            "checkpoint is expected", path=modules_path)
    config_path = directory / module_path / "config.json"
    if config_path.exists() and not config_path.resolve().is_relative_to(directory.resolve()):
        raise HeaderInvalid(f"the Pooling module path {module_path!r} leads outside the checkpoint (a symlink)",
                            path=modules_path)
    return config_path


def read_json_file(path: Path) -> object:
    """A small JSON file of a checkpoint, strictly: a regular file, valid UTF-8 JSON, no
    duplicate keys, no NaN/Infinity (HeaderInvalid naming the problem otherwise)."""
    from ...containers.sniff import require_regular

    if require_regular(path) > MAX_JSON_BYTES:
        raise HeaderInvalid(f"is over {MAX_JSON_BYTES} bytes: not a config file", path=path)
    try:
        return json.loads(path.read_bytes().decode(), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HeaderInvalid(f"is not valid JSON ({type(exc).__name__}: {exc})", path=path) from None


MAX_JSON_BYTES = 16 << 20


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def check_complete(family: Family, config: dict, names: set[str], path: Path) -> None:
    check_layer_count(config, len(names), where=path, origin="config.json" if path.is_dir() else "GGUF metadata")
    missing = sorted(set(family.tensor_shapes(config)) - names)
    if missing:
        raise MissingFile(f"{len(missing)} tensors of the {family.title} layout are absent, e.g. {missing[0]!r} "
                          "(a plain transformers model has no per-projection norms)", path=path)


def float_tensor(dtype: str, data: np.ndarray, shape: tuple[int, ...], *, tensor: str | None = None,
                 path: object = None) -> np.ndarray:
    """float32 values, NaN/Inf refused (NonFiniteWeight: an embedding or norm with them
    gives NaN embeddings in every runtime)."""
    if dtype not in ("BF16", "F16", "F32"):
        raise UnknownTensorType(f"{dtype} is not a float type", path=path, tensor=tensor)
    return Tensor(dtype, data).check_finite(tensor=tensor, path=path).f32().reshape(shape)


def hf_name(family: Family, name: str) -> str:
    """A checkpoint's name with the `model.` prefix the family tables use."""
    return name if name.startswith("model.") else "model." + name


def checked_projection(family: Family, hf: str, shape: tuple[int, ...], path: Path) -> None:
    if is_projection(hf) and len(shape) != 2:
        raise FormatError(f"a projection is 2-D, got shape {list(shape)}", path=path, tensor=hf)
