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
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ...errors import DuplicateLayout, FormatError, ShapeError, UnknownLayout, UsageError
from ..ternary import TernaryWeight, stored_beta

__all__ = ["ENTRY_POINT_GROUP", "Layout", "LayoutSpec", "find_layout", "get_layout", "layout_names", "layout_notes",
           "layouts", "layout_of_type", "layouts_of_type", "load_hook", "normalize_name", "outtype_of", "readers",
           "register", "unregister", "variants"]


@dataclass(frozen=True)
class LayoutSpec:
    """The one entry of a layout, from which every table that names it is derived (the sinks'
    outtypes, GGUF type ids and file types, the reader's type -> layout map, the kernel walk,
    the default output-name suffix). See the README's "Adding a layout".

    block_size / type_size: elements per block and bytes per block of codes (scale bytes
    included when the block carries one), in the manner of gguf-py's GGML_QUANT_SIZES.
    """

    name: str  # canonical name, normalised for lookups ("tq2_0" == "TQ2-0")
    block_size: int
    type_size: int
    scale: str  # where beta lives: "tensor:bf16" (separate tensor), "tail:f32", "block:f16", "sidecar:f32"
    source: str = ""  # where the byte format is defined (peer file, function)
    row_bytes: int = 0  # bytes of per-row metadata before each row's blocks (e.g. a row scale)
    tail_bytes: int = 0  # bytes after all rows (e.g. I2_S's 32-byte scale slot)
    outtype: str | None = None  # the --outtype that writes it, when not `name` ("hf" -> "hf-packed")
    aliases: tuple[str, ...] = ()  # further names get_layout accepts
    container: str = "gguf"  # "gguf" (a tensor type in a .gguf file); "safetensors" or "torch" (a directory)
    type_name: str | None = None  # GGML type name in GGUF ("I2_S"); several layouts may share one
    type_ids: Mapping[str, int] = field(default_factory=dict)  # type-id table -> id: "mainline", "2025", ...
    file_type: int | None = None  # general.file_type written with it
    runtimes: tuple[str, ...] = ()  # --target values that load it; the first is the default target
    variant: str = ""  # among layouts sharing a type: the read option value that picks it (--i2s-variant)
    type_default: bool = True  # among layouts sharing a type: read when neither option nor metadata says
    # what storing beta rounds it to ("fp16", "bf16"; "" = kept exactly): the one declaration verify,
    # diff and roundtrip apply (rounding.py); a GGUF layout's encode takes lossy= for it
    beta_rounding: str = ""
    tiled: bool = False  # bytes depend on a kernel_config tiling (resolve_tiling kind = name)
    kernel: str = "generic"  # the kernel walk: a kernel_formats walk name, or "generic" (decode, then hf's walk)
    kernel_id: int | None = None  # the C walk number (BP_LAYOUT_* in kernels/bitnet_kernels.h) of `kernel`
    suffix: str | None = None  # the type part of default output names (default: outtype upper-cased)
    # A directory layout's own writer and reader, as "module:Class" (imported when used): the Sink
    # that writes the directory (hf-packed's is the transformers sink), and the Checkpoint class
    # whose `claims(path)` picks out such a directory for open_checkpoint (optionally `raw_files(path)`
    # for inspect --raw).
    sink: str = ""
    reader: str = ""

    def __post_init__(self) -> None:
        if self.container not in CONTAINERS:
            raise UsageError(f"layout {self.name!r}: container must be one of {CONTAINERS}, got {self.container!r}")
        if self.container == "gguf" and (self.type_name is None or not self.type_ids):
            raise UsageError(f"layout {self.name!r} goes in GGUF files: give type_name and type_ids")
        if self.beta_rounding not in BETA_ROUNDINGS:
            raise UsageError(f"layout {self.name!r}: beta_rounding must be one of {sorted(BETA_ROUNDINGS)}, "
                             f"got {self.beta_rounding!r}")
        if self.kernel != "generic" and self.kernel_id is None:
            raise UsageError(f"layout {self.name!r} names kernel walk {self.kernel!r} but no kernel_id")
        if self.container == "gguf" and (self.sink or self.reader):
            raise UsageError(f"layout {self.name!r} goes in GGUF files, which the GGUF sink and reader handle: "
                             "sink= and reader= are for directory layouts")
        for hook in (self.sink, self.reader):
            if hook and not re.fullmatch(r"[\w.]+:\w+", hook):
                raise UsageError(f"layout {self.name!r}: sink/reader is 'module:Class', got {hook!r}")

    @property
    def ggml_type(self) -> int | None:
        """The type id in the layout's first type-id table (see `type_ids` for all of them)."""
        return next(iter(self.type_ids.values()), None)

    @property
    def write_name(self) -> str:
        """The --outtype that writes this layout."""
        return self.outtype or self.name

    @property
    def name_suffix(self) -> str:
        return self.suffix or self.write_name.upper()


def _bf16(beta: np.float32) -> np.float32:
    from ..dtypes import round_to_bf16

    return np.float32(round_to_bf16(np.asarray([beta], np.float32))[0])


# How an entry's `beta_rounding` rounds a float32 beta (round to nearest even).
BETA_ROUNDINGS = {"": np.float32, "fp16": lambda beta: np.float32(np.float16(beta)), "bf16": _bf16}
CONTAINERS = ("gguf", "safetensors", "torch")  # the last two are directories
ENTRY_POINT_GROUP = "bitnet_pack.layouts"

_REGISTRY: dict[str, Layout] = {}  # normalised canonical name -> the layout
_SPELLINGS: dict[str, str] = {}  # every normalised name, outtype and alias -> canonical key


def normalize_name(name: str) -> str:
    """'TQ2_0', 'tq2-0' and 'Tq2 0' all become 'tq2-0'."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


class Layout:
    """Base class: subclasses set `spec` and implement `encode`/`decode`; they register
    themselves on definition (a name, outtype or alias taken twice is a DuplicateLayout)."""

    spec: ClassVar[LayoutSpec]
    embeds_scale: ClassVar[bool] = True
    # How the kernel reads the bytes of a layout with a C tile of its own that no built-in walk
    # describes: a `kernel_formats.Walk` (beta, byte runs to refuse, numpy codes) for spec.kernel.
    kernel_walk: ClassVar[object | None] = None
    # A layout whose code bytes another walk's tile reads with its rows in another order (the
    # entry names that walk): a `kernel_formats.RowOrder` (its beta, its code bytes, the order).
    kernel_rows: ClassVar[object | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "spec" in cls.__dict__:
            register(cls)

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
        """Bytes `encode` produces for a weight of `shape` (scale included if embedded):
        per row `row_bytes` + in/block_size blocks of `type_size`, then `tail_bytes`."""
        self.check_shape(shape)
        spec = self.spec
        return shape[0] * (spec.row_bytes + shape[1] // spec.block_size * spec.type_size) + spec.tail_bytes

    def rounded_beta(self, beta: float) -> np.float32:
        """beta as the bytes keep it (`spec.beta_rounding`; unchanged when it is "")."""
        return self.round_beta(beta)

    def file_nbytes(self, rows: int, cols: int) -> int | None:
        """Bytes of a stored [rows, cols] tensor as a reader sizes it; None if no such tensor."""
        try:
            return self.nbytes((rows, cols))
        except ShapeError:
            return None

    def stored_shape(self, shape: tuple[int, int]) -> tuple[int, ...]:
        """Shape of the array `encode` returns (flat bytes unless the layout says otherwise)."""
        return (self.nbytes(shape),)

    def encode(self, weight: TernaryWeight, **options: object) -> np.ndarray:
        """The exact bytes the target runtime stores; layouts may take keyword options
        (TQ's `lossy=`, TL's `tiling=`)."""
        raise NotImplementedError(f"{self.name}: encode is not implemented")

    def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
        raise NotImplementedError(f"{self.name}: decode is not implemented")

    def quantize_master(self, source: object, entry: object) -> tuple[TernaryWeight, np.ndarray] | None:
        """What the runtime's own converter makes of a master's projection `entry` of `source`,
        when it ternarizes otherwise than absmean in float32 (codes, and a mask the layout's
        sink may need); None (the default) when it does not, or `source` is no master."""
        return None

    @property
    def beta_rounding(self) -> str:
        """What storing beta in this layout does to a float32 beta: "" (kept exactly), "fp16"
        or "bf16". Declared once, in the table entry (`LayoutSpec.beta_rounding`)."""
        return self.spec.beta_rounding

    def round_beta(self, beta: float, *, scale_dtype: str | None = None, inverse: bool = False) -> np.float32:
        """beta as this layout stores it (float32 bits): rounded to `beta_rounding`, or to
        `scale_dtype` when the container chooses it (hf's weight_scale dtype); `inverse`: the
        stored value is 1/beta (BitLinear), so beta comes back as 1 / round(1 / beta)."""
        rounding = BETA_ROUNDINGS[self.beta_rounding if scale_dtype is None else scale_dtype]
        beta = np.float32(beta)
        if inverse:
            return np.float32(1) / rounding(np.float32(1) / beta)
        return rounding(beta)

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

    # -- what the sinks, inspect and the model ask a layout (defaults: nothing to add) ------
    def target_refusal(self, target: str, also: tuple[str, ...] = ()) -> str | None:
        """Why `--target target` cannot write this layout (None: it can), naming what it takes
        (the layouts whose entry lists it, and `also`); default from the entry's `runtimes`."""
        if target in self.spec.runtimes:
            return None
        takes = [lay.spec.write_name for lay in layouts() if target in lay.spec.runtimes] + list(also)
        return (f"--outtype {self.spec.write_name} runs only in {' or '.join(self.spec.runtimes)}; "
                f"{target} takes {', '.join(takes)}")

    def gguf_arch(self, family: object, target: str, arch: str | None) -> str | None:
        """The GGUF arch to write for `family` under `target` (None: the target's first); `arch` is --arch."""
        return arch

    def write_notes(self, entries: list, embedding_type: str) -> list[str]:
        """What convert tells the user when it writes this layout (beta rounding aside)."""
        return []

    def inspect_notes(self) -> list[str]:
        """What inspect says about a file holding this layout."""
        return []

    def family_refusal(self, family: object) -> str | None:
        """Why a model of `family` (an `arch.Family`) cannot go into this layout (None: it can),
        e.g. a runtime whose graph is one family's only. Sinks refuse with it; `roundtrip`
        leaves such layouts out of its default list."""
        return None

    def notes_about(self, other: Layout) -> list[str]:
        """What this layout's runtime says about files in `other` (e.g. that it cannot run them)."""
        return []

    def runtime_linear(self, numerics: str) -> Callable | None:
        """A product that quantizes activations the way this layout's runtime does under `--numerics
        numerics`, `(PackedMatrix, x) -> y`; None: the common per-token product."""
        return None

    def _check_blob(self, data: np.ndarray, shape: tuple[int, int], tensor: str | None = None) -> np.ndarray:
        """The encoded bytes as a flat uint8 array of exactly `nbytes(shape)`."""
        flat = np.asarray(data).reshape(-1).view(np.uint8) if np.asarray(data).dtype != np.uint8 else np.asarray(data).reshape(-1)
        want = self.nbytes(shape)
        if flat.size != want:
            raise ShapeError(f"{self.name} data for shape {list(shape)} is {want} bytes, got {flat.size}", tensor=tensor)
        return flat


def register(layout: type[Layout] | Layout) -> Layout:
    """Add a layout (class or instance) to the registry under its name, outtype and aliases.
    Layout subclasses with a `spec` are registered on definition; call this only for layouts
    built otherwise. DuplicateLayout when any of its spellings is taken."""
    instance = layout() if isinstance(layout, type) else layout
    spec = instance.spec
    key = normalize_name(spec.name)
    spellings = {normalize_name(n) for n in (spec.name, spec.write_name, *spec.aliases)}
    taken = sorted(n for n in spellings if n in _SPELLINGS)
    if taken:
        owner = _REGISTRY[_SPELLINGS[taken[0]]]
        raise DuplicateLayout(f"layout {spec.name!r} ({type(instance).__module__}) takes the name {taken[0]!r} "
                              f"of layout {owner.name!r} ({type(owner).__module__}); a name is registered once")
    _REGISTRY[key] = instance
    _SPELLINGS.update(dict.fromkeys(spellings, key))
    return instance


def layout_notes(layout: Layout, *, writing: tuple[list, str] | None = None) -> list[str]:
    """What `layout` and every registered layout's runtime say about it, once each: its
    `write_notes(*writing)` when writing, else its `inspect_notes()`, then `notes_about`."""
    own = layout.write_notes(*writing) if writing is not None else layout.inspect_notes()
    return list(dict.fromkeys([*own, *(n for other in layouts() for n in other.notes_about(layout))]))


def unregister(name: str) -> None:
    """Remove a registered layout and its spellings (tests and plugin reloads)."""
    key = normalize_name(get_layout(name).name)
    del _REGISTRY[key]
    for spelling in [s for s, k in _SPELLINGS.items() if k == key]:
        del _SPELLINGS[spelling]


def get_layout(name: str) -> Layout:
    """The registered layout called `name`.

    Args:
        name: a layout name, normalised ("TQ2_0" == "tq2-0"); its outtype or an alias works
            too ("hf-packed" is "hf").

    Returns:
        The `Layout`: `encode(TernaryWeight) -> np.ndarray` of the runtime's bytes, and
        `decode(bytes as numpy or torch, shape) -> TernaryWeight`. UnknownLayout lists the known ones.

    Example:
        >>> get_layout("HF-packed").name
        'hf'
    """
    _load_all()
    key = _SPELLINGS.get(normalize_name(name))
    if key is None:
        raise UnknownLayout(f"unknown layout {name!r}; known: {', '.join(layout_names())}")
    return _REGISTRY[key]


def find_layout(name: str) -> Layout | None:
    """`get_layout(name)`, or None for a name no layout answers to."""
    _load_all()
    key = _SPELLINGS.get(normalize_name(name))
    return None if key is None else _REGISTRY[key]


def outtype_of(layout: str) -> str:
    """The `--outtype` that writes `layout` ("hf" -> "hf-packed"; most are their own)."""
    return get_layout(layout).spec.write_name


def layouts() -> list[Layout]:
    """Every registered layout, by name."""
    _load_all()
    return sorted(_REGISTRY.values(), key=lambda layout: layout.name)


def layout_names() -> list[str]:
    return [layout.name for layout in layouts()]


def load_hook(reference: str) -> object:
    """The object a spec's `sink` / `reader` names ("package.module:Class")."""
    from importlib import import_module

    module, _, attribute = reference.partition(":")
    return getattr(import_module(module), attribute)


def readers() -> list[type]:
    """The Checkpoint classes directory layouts name as their readers (`LayoutSpec.reader`)."""
    return [load_hook(layout.spec.reader) for layout in layouts() if layout.spec.reader]


def layouts_of_type(type_name: str) -> list[Layout]:
    """The GGUF layouts stored as GGML type `type_name` (several when bytes alone cannot tell
    them apart, e.g. I2_S's x86 and ARM blocks), the default reading (`type_default`) first."""
    found = [layout for layout in layouts() if layout.spec.type_name == type_name.upper()]
    return sorted(found, key=lambda layout: (not layout.spec.type_default, layout.name))


def variants() -> list[str]:
    """The read-option values (`--i2s-variant`) that pick among layouts sharing a GGUF type."""
    return list(dict.fromkeys(layout.spec.variant for layout in layouts() if layout.spec.variant))


def layout_of_type(type_name: str, *, variant: str | None = None, recorded: str | None = None) -> Layout | None:
    """The layout a GGUF tensor of `type_name` is read as: the one whose `variant` the read
    option names, else the one the file's `bitnet_pack.layout` key records, else the default.
    A variant no layout has is refused (UnknownLayout), never read as the default."""
    if variant is not None and variant not in variants():
        raise UnknownLayout(f"unknown variant {variant!r}; known: {', '.join(variants())}")
    found = layouts_of_type(type_name)
    chosen = [lay for lay in found if variant is not None and lay.spec.variant == variant]
    chosen += [lay for lay in found if variant is None and recorded is not None and lay.name == recorded]
    return (chosen or found or [None])[0]


_loaded = False
_loading = False


def _load_all() -> None:
    """Import every module of this package (each layout registers itself), then the layouts
    other packages declare in the `bitnet_pack.layouts` entry-point group; once, lazily (a
    failed import is raised, and tried again on the next lookup)."""
    global _loaded, _loading
    if _loaded or _loading:
        return
    from importlib import import_module
    from pkgutil import iter_modules

    _loading = True
    try:
        for module in sorted(m.name for m in iter_modules(__path__)):
            import_module(f"{__name__}.{module}")
        _load_entry_points()
        _loaded = True
    finally:
        _loading = False


def _load_entry_points() -> None:
    """An entry point names a module (its Layout subclasses register on import) or a Layout
    subclass; a broken plugin is skipped with a warning, a duplicate name is refused."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
        except Exception as exc:  # a third party's import error must not stop the built-in layouts
            warnings.warn(f"layout plugin {point.name!r} ({point.value}) failed to load: {exc}", RuntimeWarning,
                          stacklevel=3)
            continue
        if isinstance(loaded, type) and issubclass(loaded, Layout) and loaded not in map(type, _REGISTRY.values()):
            register(loaded)
