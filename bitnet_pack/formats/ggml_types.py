"""GGML tensor type ids and byte sizes, upstream and bitnet.cpp's fork side by side.

gguf-py (`gguf.GGMLQuantizationType`, `GGML_QUANT_SIZES`) is the table for upstream types.
It has no ids for bitnet.cpp's types, and upstream reuses their numbers (36-38 were the
removed IQ4_NL_4_x, 39 is MXFP4, 42 is Q2_0), so a type id means nothing without knowing
which runtime wrote the file. `TypeTable` pins that choice: one per target flavour.

bitnet.cpp's byte sizes are special-cased in its `ggml_nbytes` (not blocks x type size):

    I2_S : M*K/4 + 32                    codes, then f32 scale + 28 bytes of tail
    TL1  : M*K/4 + 32                    codes, then the `_scale` sidecar slot
    TL2  : pad32(F) + 32,  F = (K-256)*M//3*5//8 + 256*M//2*4//8   (integer arithmetic)

with M = rows (out_features, ggml ne[1]) and K = columns (in_features, ggml ne[0]).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

ALIGNMENT = 32


def pad(n: int, align: int = ALIGNMENT) -> int:
    return -(-n // align) * align


SLOT_BYTES = 32  # the tail after I2_S/TL codes: f32 beta, then 28 bytes (zero when we write)


def scale_slot(beta: np.float32) -> np.ndarray:
    """The 32 bytes after the codes: little-endian f32 beta, then 28 zero bytes."""
    slot = np.zeros(SLOT_BYTES, dtype=np.uint8)
    slot[:4] = np.frombuffer(np.float32(beta).astype("<f4").tobytes(), dtype=np.uint8)
    return slot


def slot_beta(slot: np.ndarray) -> np.float32:
    return np.frombuffer(slot[:4].tobytes(), dtype="<f4")[0].astype(np.float32)


def i2s_nbytes(rows: int, cols: int) -> int:
    return rows * cols // 4 + 32


def tl1_nbytes(rows: int, cols: int) -> int:
    return rows * cols // 4 + 32


def tl2_nbytes(rows: int, cols: int) -> int:
    return pad((cols - 256) * rows // 3 * 5 // 8 + 256 * rows // 2 * 4 // 8) + 32


@dataclass(frozen=True)
class BitnetType:
    name: str
    type_id: int
    nbytes: object  # Callable[[rows, cols], int]


# Type-id tables. "mainline": upstream llama.cpp (gguf-py's ids). "2025": the fork that
# bitnet.cpp releases up to mid-2025 use (Eddie-Wang1120 merge-dev / 40ed0f2, the conformance
# vectors). "2026": newer forks, where upstream's MXFP4 took 39 and TL2 moved to 42 (reported,
# microsoft/BitNet#631). Each layout's entry (layouts.LayoutSpec.type_ids) says its id per table.
MAINLINE = "mainline"
BITNET_CPP_TABLES = ("2025", "2026")


def table_ids(flavour: str | None) -> dict[str, int]:
    """Type name -> id of the registered layouts listed in one type-id table (None = mainline)."""
    from .layouts import layouts

    key = flavour or MAINLINE
    return {layout.spec.type_name: layout.spec.type_ids[key] for layout in layouts()
            if key in layout.spec.type_ids}


def bitnet_cpp_flavours() -> dict[str, dict[str, int]]:
    """bitnet.cpp fork generation -> {type name: id} of its own types."""
    return {flavour: table_ids(flavour) for flavour in BITNET_CPP_TABLES}


def bitnet_cpp_file_types() -> set[int]:
    """general.file_type values only bitnet.cpp's forks write (its own types)."""
    from .layouts import layouts

    return {layout.spec.file_type for layout in layouts()
            if layout.spec.file_type is not None and set(layout.spec.type_ids) & set(BITNET_CPP_TABLES)}


def type_tables() -> list[str]:
    """Every type-id table some registered entry lists its id under: mainline, bitnet.cpp's
    generations, and a runtime's own (ik_llama.cpp's, whose ids no other runtime uses)."""
    from .layouts import layouts

    found = dict.fromkeys([MAINLINE, *BITNET_CPP_TABLES])
    found.update(dict.fromkeys(t for layout in layouts() for t in layout.spec.type_ids))
    return list(found)


def own_table_of_file_type(file_type: object) -> str | None:
    """The table of a runtime of its own (not mainline, not bitnet.cpp's) when the layouts written
    with `general.file_type` = `file_type` are listed in that table only; else None."""
    from .layouts import layouts

    tables = {t for layout in layouts() if layout.spec.file_type == file_type for t in layout.spec.type_ids}
    own = tables - {MAINLINE, *BITNET_CPP_TABLES}
    return own.pop() if len(own) == 1 and tables == own else None


def table_label(flavour: str | None) -> str:
    """'mainline llama.cpp', 'bitnet.cpp 2025', or a runtime's own table by name."""
    if flavour is None or flavour == MAINLINE:
        return "mainline llama.cpp"
    return f"bitnet.cpp {flavour}" if flavour in BITNET_CPP_TABLES else flavour


def _upstream(name: str, type_id: int) -> bool:
    """gguf-py knows this type under this id (its sizes then come from GGML_QUANT_SIZES)."""
    try:
        return GGMLQuantizationType(type_id).name == name
    except ValueError:
        return False


@dataclass(frozen=True)
class TypeTable:
    """Maps type ids <-> names and sizes for one runtime: gguf-py's types, plus `bitnet`, the
    registered layouts' types gguf-py lacks (bitnet.cpp's in its fork tables; plugins')."""

    flavour: str | None = None
    bitnet: dict[int, BitnetType] = field(default_factory=dict)

    @classmethod
    def for_target(cls, flavour: str | None) -> TypeTable:
        """`None` = mainline llama.cpp; "2025" / "2026" = a bitnet.cpp fork generation; any other
        table a layout entry lists its id under."""
        from .layouts import layouts_of_type

        ids = {name: i for name, i in table_ids(flavour).items() if not _upstream(name, i)}
        return cls(flavour, {i: BitnetType(n, i, layouts_of_type(n)[0].file_nbytes) for n, i in ids.items()})

    def name(self, type_id: int) -> str | None:
        """The type's name, or None when the id is unknown to this table."""
        if type_id in self.bitnet:
            return self.bitnet[type_id].name
        try:
            return GGMLQuantizationType(type_id).name
        except ValueError:
            return None

    def type_id(self, name: str) -> int:
        for bt in self.bitnet.values():
            if bt.name == name.upper():
                return bt.type_id
        return int(GGMLQuantizationType[name.upper()])

    def nbytes(self, type_id: int, shape: tuple[int, ...]) -> int | None:
        """Bytes of a tensor of torch-order `shape` (rows..., cols); None if unknown/invalid."""
        if type_id in self.bitnet:
            if len(shape) != 2:
                return None
            return self.bitnet[type_id].nbytes(shape[0], shape[1])
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
        except (ValueError, KeyError):
            return None
        count = 1
        for dim in shape:
            count *= dim
        if not shape or shape[-1] % block:
            return None if shape else size
        return count // block * size
