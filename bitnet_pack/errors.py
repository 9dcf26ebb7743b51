"""Typed errors. The library raises these; only the CLI turns them into exit codes.

Every message is one line that names the file, the tensor and the cause, with numbers.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISMATCH = 3


class BitnetPackError(Exception):
    """Base class: a failure the user can act on. `exit_code` is what the CLI returns."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, path: object = None, tensor: str | None = None):
        self.path = None if path is None else str(path)
        self.tensor = tensor
        where = ", ".join(x for x in (self.path, tensor and f"tensor {tensor!r}") if x)
        super().__init__(f"{where}: {message}" if where else message)


class FormatError(BitnetPackError):
    """A file does not follow its container format."""


class TruncatedFile(FormatError):
    """The file ends before the data its header promises."""


class BadMagic(FormatError):
    """The first bytes are not the container's magic."""


class LfsPointer(FormatError):
    """The file is a git-lfs pointer, not the data."""


class HeaderTooLarge(FormatError):
    """A declared header length is beyond the limit or the file."""


class HeaderInvalid(FormatError):
    """The header is not valid JSON / GGUF key-values, or has holes, overlaps or duplicates."""


class OffsetOutOfRange(FormatError):
    """A tensor's offset or size reaches past the data section."""


class MissingTensor(FormatError):
    """A tensor the architecture needs is absent."""


class UnexpectedTensor(FormatError):
    """A tensor the architecture has no place for."""


class DuplicateTensor(FormatError):
    """A tensor name appears twice."""


class UnknownTensorType(FormatError):
    """A dtype or ggml type id this tool does not know."""


class ShapeError(BitnetPackError):
    """A shape a layout cannot take; the message names the rule."""


class NonFiniteWeight(BitnetPackError):
    """NaN or Inf in a master weight."""


class ScaleNotRepresentable(BitnetPackError):
    """A beta the layout cannot store exactly (TQ's fp16 d); `lossy=True` rounds it."""


class NonFiniteActivation(BitnetPackError):
    """NaN or Inf in an activation row."""


class NotTernary(BitnetPackError):
    """Data that claims to be ternary holds another value."""


class UnknownArchitecture(BitnetPackError):
    """config.json or GGUF names an architecture this tool does not convert."""


class MissingFile(BitnetPackError):
    """A file a checkpoint needs (config, tokenizer, shard) is absent."""


class UsageError(BitnetPackError):
    """Arguments that cannot work together (the CLI maps this to exit 2)."""

    exit_code = EXIT_USAGE


class UnknownLayout(UsageError):
    """A layout name no registry entry (built in or from an entry point) answers to."""


class DuplicateLayout(UsageError):
    """Two layouts registered under one name (or one alias): a packaging error."""


class OutputExists(UsageError):
    """The output exists (or is the input) and --force was not given."""


class VerificationMismatch(BitnetPackError):
    """Two checkpoints that should agree do not."""

    exit_code = EXIT_MISMATCH
