"""Golden traces: one model's greedy decode saved to an .npz, and a model checked against it.

A trace is side A of `verify` written to a file, so that another project's CI can hold the
logits a model must give and check a converted file against them without the original:

    key        dtype / shape              meaning
    prompt     int64 [T], T >= 1          the prompt's token ids
    ids        int64 [n], n >= 1          the greedy ids, ids[k] = argmax(logits[T - 1 + k])
    logits     float32 [T - 1 + n, V]     row r is position r: the prompt's rows before its
                                          last, then one row per step (`verify.decode_rows`)
    numerics   str (optional)             the numerics mode it was decoded with
    version    str (optional)             the bitnet-pack version that recorded it

Written with `numpy.savez` (no pickles: only these plain arrays), under a temporary name that
is renamed once complete. `load_trace` checks every key, dtype and shape and the ids against
the logits' argmax, so a truncated or edited file is refused (FormatError, exit 1) instead of
being compared. `verify_trace` replays the trace's ids into the model and compares every row
bit for bit (or within atol): the first differing row gives the step and position.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..containers.outputs import check_output
from ..containers.sniff import require_regular
from ..errors import FormatError, MissingFile
from .verify import Progress, VerifyReport, check_atol, check_vocab, compare_rows, decode_rows, kernels_of

if TYPE_CHECKING:  # annotations only: loading the model module loads the kernel
    from ..engine.model import BitNetModel

MAX_INFLATION = 16

__all__ = ["Trace", "load_trace", "record", "save_trace", "verify_trace"]

REQUIRED = {"prompt": np.int64, "ids": np.int64, "logits": np.float32}
OPTIONAL = ("numerics", "version")
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a first entry, or an empty archive


@dataclass(frozen=True)
class Trace:
    prompt: np.ndarray  # int64 [T]
    ids: np.ndarray  # int64 [n]
    logits: np.ndarray  # float32 [T - 1 + n, vocab]
    numerics: str | None = None
    version: str | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.logits.shape[1])


def record(model: BitNetModel, prompt_ids: list[int], n_tokens: int, *,
           progress: Progress | None = None) -> Trace:
    """Greedy-decode `n_tokens` after `prompt_ids` and keep every logits row."""
    ids, rows = decode_rows(model, prompt_ids, n_tokens, progress=progress)
    return Trace(np.asarray(prompt_ids, np.int64), np.asarray(ids, np.int64), rows,
                 model.numerics.name, __version__)


def save_trace(trace: Trace, path: str | Path, *, force: bool = False, inputs: list[Path] | None = None) -> Path:
    """Write `trace` to `path` (.npz content whatever the name), whole or not at all."""
    final = Path(path)
    check_output(final, list(inputs or []), force)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.incomplete-{os.getpid()}")
    arrays = {key: np.asarray(getattr(trace, key), dtype) for key, dtype in REQUIRED.items()}
    arrays |= {key: np.array(getattr(trace, key)) for key in OPTIONAL if getattr(trace, key) is not None}
    try:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return final


def load_trace(path: str | Path) -> Trace:
    """The trace in `path`, checked; FormatError naming the file and the first problem."""
    path = Path(path)
    if not path.exists():
        raise MissingFile("trace file not found", path=path)
    size = require_regular(path)
    with open(path, "rb") as handle:
        if handle.read(4) not in ZIP_MAGICS:  # np.load would try a pickle, or a lone .npy array
            raise FormatError("not a trace: not an .npz (zip) archive", path=path)
    check_members(path, size)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
        raise FormatError(f"not a readable .npz trace ({type(exc).__name__}: {exc})", path=path) from None
    return _checked(arrays, path)


def check_members(path: Path, size: int) -> None:
    """Every member a `.npy` array, and all of them together at most MAX_INFLATION times the
    file (logits barely compress): a small zip that inflates to gigabytes is refused unread."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for info in members:
                with archive.open(info) as member:
                    if not info.filename.endswith(".npy") or member.read(6) != b"\x93NUMPY":
                        raise FormatError(f"not a trace: member {info.filename!r} is not an .npy array",
                                          path=path)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError) as exc:
        raise FormatError(f"not a readable .npz trace ({type(exc).__name__}: {exc})", path=path) from None
    inflated = sum(info.file_size for info in members)
    if inflated > MAX_INFLATION * size + (1 << 20):
        raise FormatError(f"not a trace: {size} bytes inflate to {inflated} (more than {MAX_INFLATION}x)",
                          path=path)


def _checked(arrays: dict[str, np.ndarray], path: Path) -> Trace:
    def bad(message: str) -> FormatError:
        return FormatError(f"not a valid trace: {message}", path=path)

    missing = [key for key in REQUIRED if key not in arrays]
    unknown = [key for key in arrays if key not in REQUIRED and key not in OPTIONAL]
    if missing or unknown:
        raise bad(f"keys {sorted(arrays)}: missing {missing}, unknown {unknown} "
                  f"(expected {list(REQUIRED)} and optionally {list(OPTIONAL)})")
    for key, dtype in REQUIRED.items():
        if arrays[key].dtype != np.dtype(dtype):
            raise bad(f"{key} is {arrays[key].dtype}, expected {np.dtype(dtype)}")
    prompt, ids, logits = arrays["prompt"], arrays["ids"], arrays["logits"]
    if prompt.ndim != 1 or ids.ndim != 1 or prompt.size == 0 or ids.size == 0:
        raise bad(f"prompt {list(prompt.shape)} and ids {list(ids.shape)} must be non-empty 1-D arrays")
    rows = prompt.size - 1 + ids.size
    if logits.ndim != 2 or logits.shape[0] != rows or logits.shape[1] == 0:
        raise bad(f"logits {list(logits.shape)}, expected [{rows}, vocab] for a {prompt.size}-token prompt "
                  f"and {ids.size} ids")
    for key, values in (("prompt", prompt), ("ids", ids)):
        if values.min() < 0 or values.max() >= logits.shape[1]:
            raise bad(f"{key} holds ids outside [0, {logits.shape[1]})")
    chosen = np.argmax(logits[prompt.size - 1:], axis=1)
    if not np.array_equal(chosen, ids):
        step = int(np.flatnonzero(chosen != ids)[0])
        raise bad(f"ids[{step}] = {ids[step]} is not the argmax {chosen[step]} of its logits row")
    extras = {key: _text(arrays[key], key, bad) for key in OPTIONAL if key in arrays}
    return Trace(prompt, ids, logits, **extras)


def _text(value: np.ndarray, key: str, bad) -> str:
    if value.ndim != 0 or value.dtype.kind != "U":
        raise bad(f"{key} must be a string, got {value.dtype} {list(value.shape)}")
    return str(value)


def verify_trace(model: BitNetModel, trace: Trace, *, atol: float = 0.0,
                 progress: Progress | None = None) -> VerifyReport:
    """Feed the trace's prompt and ids to `model` and compare each logits row with the
    trace's (A = the trace, B = the model). `progress(1)` once per pass (n + 1)."""
    atol = check_atol(atol)
    check_vocab(trace.vocab_size, model.config.vocab_size, "the trace and the model")
    prompt = [int(t) for t in trace.prompt]
    _, rows = decode_rows(model, prompt, len(trace.ids), feed=trace.ids, progress=progress)
    return VerifyReport(
        prompt_ids=tuple(prompt), ids=tuple(int(t) for t in trace.ids),
        rows=tuple(compare_rows(len(prompt), trace.logits, rows)), atol=atol,
        numerics=(trace.numerics or model.numerics.name, model.numerics.name), weights=None,
        kernels=("", kernels_of(model)), versions=(trace.version or "unknown", __version__),
    )
