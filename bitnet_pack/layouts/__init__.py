"""Registry of packed ternary layouts: one module per layout, looked up by normalised name.

A layout turns a `TernaryWeight` into the exact bytes one runtime loads, and back:

    layout = get_layout("TQ2_0")            # same as "tq2-0", "tq2_0"
    blob = layout.encode(tw)                # np.ndarray of uint8 (shape: layout.stored_shape)
    tw2 = layout.decode(blob, tw.shape)     # exact inverse; beta= needed if not embedded

Every layout declares its table entry (`LayoutSpec`) so sizes can be planned before any
data is touched, and checks shapes with messages that carry the numbers and the rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import FormatError, ShapeError, UsageError
from ..ternary import TernaryWeight, stored_beta

__all__ = ["OUTTYPE_OF_LAYOUT", "Layout", "LayoutSpec", "get_layout", "layout_names", "normalize_name", "outtype_of"]


@dataclass(frozen=True)
class LayoutSpec:
    """The table entry of a layout, in the manner of gguf-py's GGML_QUANT_SIZES.

    block_size / type_size: elements per block and bytes per block of codes (scale bytes
    included when the block carries one). `scale` says where beta lives.
    """

    name: str
    block_size: int
    type_size: int
    scale: str  # "tensor:bf16" (separate tensor), "tail:f32", "block:f16", "sidecar:f32"
    ggml_type: int | None = None
    source: str = ""


_REGISTRY: dict[str, Layout] = {}


def normalize_name(name: str) -> str:
    """'TQ2_0', 'tq2-0' and 'Tq2 0' all become 'tq2-0'."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


class Layout:
    """Base class: subclasses set `spec` and implement `encode`/`decode`; they register
    themselves on definition (a duplicate name is a programming error)."""

    spec: ClassVar[LayoutSpec]
    embeds_scale: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "spec" not in cls.__dict__:
            return
        key = normalize_name(cls.spec.name)
        assert key not in _REGISTRY, f"layout {cls.spec.name!r} registered twice"
        _REGISTRY[key] = cls()

    @property
    def name(self) -> str:
        return self.spec.name

    def check_shape(self, shape: tuple[int, ...], tensor: str | None = None) -> None:
        """Raise ShapeError naming the rule when this layout cannot hold `shape`."""
        if len(shape) != 2 or min(shape) < 1:
            raise ShapeError(f"{self.name} needs a non-empty 2-D [out, in] shape, got {list(shape)}", tensor=tensor)
        block = self.spec.block_size
        if shape[1] % block:
            raise ShapeError(f"{self.name} needs in_features % {block} == 0 (a {block}-element block must not "
                             f"cross a row), got in_features {shape[1]} (shape {list(shape)})", tensor=tensor)

    def nbytes(self, shape: tuple[int, int]) -> int:
        """Bytes `encode` produces for a weight of `shape` (scale included if embedded)."""
        self.check_shape(shape)
        return shape[0] * shape[1] // self.spec.block_size * self.spec.type_size

    def stored_shape(self, shape: tuple[int, int]) -> tuple[int, ...]:
        """Shape of the array `encode` returns (flat bytes unless the layout says otherwise)."""
        return (self.nbytes(shape),)

    def encode(self, weight: TernaryWeight, **options: object) -> np.ndarray:
        """The exact bytes the target runtime stores; layouts may take keyword options
        (TQ's `lossy=`, TL's `tiling=`)."""
        raise NotImplementedError(f"{self.name}: encode is not implemented")

    def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
        raise NotImplementedError(f"{self.name}: decode is not implemented")

    @property
    def beta_rounding(self) -> str:
        """What storing beta in this layout does to a float32 beta: "" (kept exactly), "fp16"
        or "bf16". Declared once, in the table entry: its `beta_rounding` where the entry has
        that field, else read from its scale type (`LayoutSpec.scale`: "block:f16" -> "fp16")."""
        declared = getattr(self.spec, "beta_rounding", None)
        if declared is not None:
            return declared
        kind = self.spec.scale.rpartition(":")[2]
        return {"f16": "fp16", "bf16": "bf16"}.get(kind, "")

    def round_beta(self, beta: float, *, scale_dtype: str | None = None, inverse: bool = False) -> np.float32:
        """beta as this layout stores it (float32 bits): rounded to `beta_rounding`, or to
        `scale_dtype` when the container chooses it (hf's weight_scale dtype); `inverse`: the
        stored value is 1/beta (BitLinear), so beta comes back as 1 / round(1 / beta)."""
        from ..rounding import round_scalar

        kind = self.beta_rounding if scale_dtype is None else scale_dtype
        beta = np.float32(beta)
        if inverse:
            return np.float32(1) / round_scalar(np.float32(1) / beta, kind)
        return round_scalar(beta, kind)

    def check_given_beta(self, stored: np.float32, given: float | None) -> None:
        """A beta passed to decode must be the one the bytes carry (same float32 bits)."""
        if given is not None and np.float32(given).tobytes() != np.float32(stored).tobytes():
            raise FormatError(f"{self.name} bytes carry beta {float(stored)!r} but "
                              f"beta={float(np.float32(given))!r} was passed")

    def read_beta(self, stored: object, codes: np.ndarray | TernaryWeight, tensor: str | None = None) -> np.float32:
        """A beta read with tensor bytes, checked (`ternary.stored_beta`): NaN, Inf, or zero or
        negative next to non-zero codes are refused; an all-zero tensor's 0 becomes ZERO_BETA."""
        def any_nonzero() -> bool:
            return bool(np.any(codes.codes if isinstance(codes, TernaryWeight) else codes))

        return stored_beta(stored, any_nonzero, layout=self.name, tensor=tensor)

    def _check_blob(self, data: np.ndarray, shape: tuple[int, int], tensor: str | None = None) -> np.ndarray:
        """The encoded bytes as a flat uint8 array of exactly `nbytes(shape)`."""
        flat = np.asarray(data).reshape(-1).view(np.uint8) if np.asarray(data).dtype != np.uint8 else np.asarray(data).reshape(-1)
        want = self.nbytes(shape)
        if flat.size != want:
            raise ShapeError(f"{self.name} data for shape {list(shape)} is {want} bytes, got {flat.size}", tensor=tensor)
        return flat


# One layout, one set of names: the `--outtype` that writes a layout, where it differs from the
# layout's own name. Either name finds the layout, and either is accepted as an outtype.
OUTTYPE_OF_LAYOUT = {"hf": "hf-packed"}


def get_layout(name: str) -> Layout:
    """The registered layout called `name`.

    Args:
        name: a layout name, normalised ("TQ2_0" == "tq2-0"); its outtype works too
            ("hf-packed" is "hf").

    Returns:
        The `Layout`: `encode(TernaryWeight) -> np.ndarray` of the runtime's bytes, and
        `decode(bytes as numpy or torch, shape) -> TernaryWeight`. UsageError lists the known ones.

    Example:
        >>> get_layout("HF-packed").name
        'hf'
    """
    _load_all()
    key = normalize_name(name)
    key = next((layout for layout, outtype in OUTTYPE_OF_LAYOUT.items() if normalize_name(outtype) == key), key)
    if key not in _REGISTRY:
        raise UsageError(f"unknown layout {name!r}; known: {', '.join(layout_names())}")
    return _REGISTRY[key]


def outtype_of(layout: str) -> str:
    """The `--outtype` that writes `layout` ("hf" -> "hf-packed"; the others are their own)."""
    name = get_layout(layout).name
    return OUTTYPE_OF_LAYOUT.get(name, name)


def layout_names() -> list[str]:
    _load_all()
    return sorted(layout.name for layout in _REGISTRY.values())


def _load_all() -> None:
    """Import every layout module so each registers itself (cheap, done once)."""
    from importlib import import_module

    for module in _MODULES:
        import_module(f"{__name__}.{module}")


_MODULES = ("hf", "i2s", "tq", "tl1", "tl2")
