"""The library other runtimes and CI call: `convert`, `open`, `inspect`, `verify`, `roundtrip`.

Each takes a SRC (a checkpoint directory, a .gguf or .safetensors file, or a hub repo id
`org/name[/file.gguf]`) and returns a typed result; none prints, none exits. The `bitnet-pack`
command line is a thin layer over these functions. Options follow one model (`options`): a
keyword the source or the output would not use is a `UsageError`, not silently ignored.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .containers.outputs import remove_stale_temps
from .engine.runner import Loaded, about
from .errors import BitnetPackError, OutputExists, UsageError
from .formats.ternary import TernaryWeight
from .pipeline import hub
from .pipeline.convert import convert as run_pipeline
from .pipeline.convert import plan as plan_pipeline
from .pipeline.convert_embedding import convert_embedding
from .pipeline.naming import count_params, model_id, resolve_output
from .pipeline.options import ReadOptions, WriteOptions, place_kernel_config, split_options
from .pipeline.progress import ProgressFactory, started
from .pipeline.sinks import PlannedTensor, gguf_split
from .pipeline.sinks.factory import canonical_outtype, is_gguf_output, make_sink
from .pipeline.sources import Checkpoint, Entry, Tensor, open_checkpoint
from .pipeline.sources.embedding import is_embedding_model
from .proof.inspection import Inspection, describe, source_bytes
from .proof.roundtrip import RoundtripReport
from .proof.verify import VerifyReport

if TYPE_CHECKING:
    from .proof.diff import WeightDiff

__all__ = ["ConvertReport", "Model", "convert", "inspect", "open", "roundtrip", "verify"]

Src = str | PathLike
_UNFORESEEN = (ValueError, OverflowError, KeyError, AttributeError, TypeError, IndexError, RecursionError)


def _typed(function: Callable) -> Callable:
    """The library raises the project's errors only: an OSError, MemoryError or an unforeseen
    ValueError/KeyError/... (a crafted input no check caught) becomes a `BitnetPackError`
    naming the original (kept as `__cause__`); KeyboardInterrupt passes through."""
    @functools.wraps(function)
    def wrapped(*args: object, **kwargs: object) -> object:
        try:
            return function(*args, **kwargs)
        except BitnetPackError:
            raise
        except FileExistsError as exc:
            raise OutputExists(f"{exc.strerror or exc}: pass force=True to replace it", path=exc.filename) from exc
        except MemoryError as exc:
            raise BitnetPackError("out of memory (MemoryError): the input asks for more than this machine has") \
                from exc
        except OSError as exc:
            raise BitnetPackError(f"{type(exc).__name__}: {exc.strerror or exc}", path=exc.filename) from exc
        except _UNFORESEEN as exc:
            raise BitnetPackError(f"unforeseen {type(exc).__name__}: {exc} (please report it)") from exc
    return wrapped


@dataclass
class ConvertReport:
    """What `convert` did (or, with `dry_run`, would do)."""

    output: Path
    outtype: str
    source: str  # the path, or "org/name@<commit>" for hub sources
    source_kind: str  # "bf16-master", "hf-packed", "gguf"
    tensors: int
    bytes_read: int
    bytes_written: int
    notes: list[str] = field(default_factory=list)  # rounding, readers' decisions, side files
    dry_run: bool = False
    planned: list[PlannedTensor] = field(default_factory=list)
    pushed: str | None = None  # the hub commit URL with `push_to_hub`
    hub_source: str | None = None  # "org/name@<commit>" when SRC was a hub repo id
    files: list[tuple[str, str]] = field(default_factory=list)  # (path, role) written, or to be written
    source_path: str = ""  # SRC as resolved (a hub SRC: its snapshot)
    source_layout: str = ""  # the projection layout of SRC
    family: str = ""
    existed: bool | None = None  # dry run: whether OUT exists already

    def to_dict(self) -> dict:
        return asdict(self) | {"output": str(self.output)}


def _resolve(src: Src, revision: str | None, progress: ProgressFactory | None, notes: list[str]) -> hub.Source:
    source = hub.resolve_source(src, revision, progress=progress is not None)
    if source.is_hub:
        notes.append(source.resolution())
    return source


@_typed
def convert(src: Src, out: Src | None = None, *, outtype: str, revision: str | None = None, force: bool = False,
            dry_run: bool = False, push_to_hub: str | None = None, progress: ProgressFactory | None = None,
            private: bool = False, commit_message: str | None = None, token: str | None = None,
            split_max_size: int | str | None = None, **options: object) -> ConvertReport:
    """Convert the checkpoint SRC into OUT in `outtype`, one tensor at a time.

    Args:
        src: a checkpoint directory, a .gguf or .safetensors file, or a hub repo id.
        out: a directory (transformers checkpoint) or a `*.gguf` path; may hold `{outtype}` or
            `{ftype}`. None, `.` or a path ending in `/` gets the GGUF-convention default name.
        outtype: a registered layout's outtype, name or alias ("hf-packed" alias "hf", "i2_s", ...;
            `sinks.factory.outtypes()`), or "bf16", "f16", "f32" (see the README's layout table).
        revision: branch, tag or commit of a hub `src`.
        force: replace an existing OUT.
        dry_run: plan only (`ConvertReport.planned`); nothing is written.
        push_to_hub: upload OUT to this repo id once complete (token and endpoint are checked first);
            `private` creates the repo private, `commit_message` and `token` as huggingface_hub's.
        split_max_size: a GGUF OUT in parts of at most this many bytes of tensors ("2G", "500MiB"),
            named and keyed as llama.cpp's gguf-split writes them (`sinks.gguf_split`).
        progress: a `progress.ProgressFactory` (e.g. `progress.bars(True)`), or None.
        **options: read and write options of `options` (e.g. `embedding_type="bf16"`,
            `scale_dtype="f32"`, `max_shard_size="2G"`, `i2s_variant="arm"`); one the source or the
            output does not use raises `UsageError`.

    Returns:
        A `ConvertReport`: the output path, counts, bytes and the notes to show the user.

    Example:
        >>> report = bitnet_pack.convert("fixtures/tiny-bitnet", "tiny.gguf", outtype="i2_s")  # doctest: +SKIP
        >>> report.output, report.tensors  # doctest: +SKIP
        (PosixPath('tiny.gguf'), 24)
    """
    outtype = canonical_outtype(outtype)
    read, write, legacy = split_options(options)
    if push_to_hub is None and (private or commit_message is not None or token is not None):
        raise UsageError("private, commit_message and token apply to push_to_hub only")
    hub.remember_token(token)
    if push_to_hub is not None and not dry_run:
        hub.check_push(push_to_hub, token)
    notes: list[str] = []
    source = _resolve(src, revision, progress, notes)
    if is_embedding_model(source.path):  # the BitNet embedding families have their own path (embedding_*)
        if read != ReadOptions() or legacy is not None or push_to_hub is not None or split_max_size is not None:
            raise UsageError("BitNet embedding models take only --outtype, --name, --beta-rule, --float-type, "
                             "--scale-dtype and --force")
        with about(source.path):
            report = convert_embedding(source.path, out, outtype, write.given(), force=force, dry_run=dry_run)
        report.notes[:0] = notes  # the hub resolution
        report.source, report.hub_source = source.label, source.label if source.is_hub else None
        return report
    with about(source.path), _open_for_output(source.path, read, write, legacy, outtype) as (checkpoint, write):
        entries = checkpoint.entries()
        target = resolve_output(out, outtype, model_id(source, checkpoint), count_params([e.shape for e in entries]))
        if write.name is None and source.is_hub and is_gguf_output(target):
            write = WriteOptions(**(write.given() | {"name": source.model_id}))  # not the snapshot folder
        given = [Path(p) for p in (read.src_kernel_config, legacy) if p is not None]  # inputs too: never replaced
        split = gguf_split.limit(split_max_size, target, outtype, push_to_hub)
        sink = make_sink(gguf_split.whole_path(target) if split else target, outtype, force=force, inputs=[source.path, *given], extra_metadata=source.metadata(),
                         options=write)
        notes += checkpoint.notes
        report = ConvertReport(target, outtype, source.label, checkpoint.kind, len(entries),
                               sum(e.nbytes for e in entries), 0, notes, dry_run,
                               hub_source=source.label if source.is_hub else None, source_path=str(source.path),
                               source_layout=checkpoint.layout, family=checkpoint.family.name)
        if dry_run or split:
            report.planned = plan_pipeline(checkpoint, sink)  # validated as a real run is
            parts = gguf_split.planned_parts(report.planned, target, split, force, [source.path, *given])
        if dry_run:
            report.bytes_written = sum(p.nbytes for p in report.planned)
            report.files, report.existed = _planned_files(target, outtype, sink), os.path.lexists(target)
            if split:
                report.output, report.files = parts[0], [(str(p), "gguf") for p in parts]
                report.existed = any(os.path.lexists(p) for p in parts)
            notes += getattr(sink, "notes", [])  # the GGUF arch it would write, warnings
            # writes nothing, but clears what killed runs left, as a real run would
            notes += [f"removed {stale.name}, left by a run that was killed" for stale in remove_stale_temps(target)]
            return report
        with started(progress, report.bytes_read, f"{source.path.name} -> {target.name}") as advance:
            if split:
                result, parts = gguf_split.converted_in_parts(lambda: run_pipeline(checkpoint, sink, progress=advance),
                                                              target, split, force, [source.path, *given])
            else:
                result = run_pipeline(checkpoint, sink, progress=advance)
    report.output, report.bytes_written, report.planned = result.output, result.bytes_written, result.planned
    report.files = list(getattr(sink, "files", [(str(result.output), "output")]))
    if split:
        report.output, report.files = parts[0], [(str(p), "gguf") for p in parts]
        notes.append(f"split into {len(parts)} parts of at most {split} bytes of tensors (llama.cpp's gguf-split "
                     f"layout; load {parts[0].name})")
    notes += getattr(sink, "notes", [])
    if push_to_hub is not None:
        origin = source.label if source.is_hub else source.model_id
        message = commit_message or f"bitnet-pack: {outtype} from {origin}"
        report.pushed = hub.push_to_hub(result.output, push_to_hub, message=message, private=private, token=token)
    return report


def _planned_files(target: Path, outtype: str, sink: object) -> list[tuple[str, str]]:
    """What a real run would write: OUT, and a TL GGUF's kernel_config.ini beside it."""
    files = [(str(target), "gguf" if is_gguf_output(target) else "checkpoint")]
    ini = getattr(sink, "planned_ini", lambda: None)()
    return files + ([(str(ini), "kernel_config")] if ini is not None else [])


@contextmanager
def _open_for_output(path: Path, read: ReadOptions, write: WriteOptions, legacy: Path | None,
                     outtype: str) -> Iterator[tuple[Checkpoint, WriteOptions]]:
    """The source opened with its read options, and the write options, once the old
    `kernel_config` is placed on the side it means (which needs the source's layout)."""
    checkpoint = _open_checked(path, read)
    if legacy is not None:
        read, write = place_kernel_config(legacy, read, write, checkpoint.layout, outtype)
        checkpoint.close()
        checkpoint = _open_checked(path, read)
    with checkpoint:
        yield checkpoint, write


def _open_checked(path: Path, read: ReadOptions) -> Checkpoint:
    """The checkpoint at `path`, refusing read options it has no use for."""
    checkpoint = open_checkpoint(path, **read.checkpoint_kwargs())
    try:
        read.check_used_by(checkpoint.layout, f"{path.name} ({checkpoint.kind})")
    except BaseException:
        checkpoint.close()
        raise
    return checkpoint


class Model:
    """An open checkpoint: its config and family, and its tensors loaded one at a time.

    Iterating yields `(name, value)` under transformers' names: projections as
    `TernaryWeight`, every other tensor as a float32 numpy array. Use as a context manager
    (or call `close`) to release the file.
    """

    def __init__(self, checkpoint: Checkpoint, label: str):
        self._checkpoint, self.source = checkpoint, label

    @property
    def config(self) -> dict:
        """The transformers config.json (rebuilt from the metadata for GGUF sources)."""
        return self._checkpoint.config

    @property
    def family(self) -> str:
        """The architecture family (arch.py): "2b4t", "1bitllm" or "llama"."""
        return self._checkpoint.family.name

    @property
    def kind(self) -> str:
        return self._checkpoint.kind

    @property
    def layout(self) -> str:
        """The projections' layout as stored: "bf16", "hf", "i2_s", "tl1", "tq2_0", ..."""
        return self._checkpoint.layout

    @property
    def notes(self) -> list[str]:
        return list(self._checkpoint.notes)

    def entries(self) -> list[Entry]:
        """The tensors planned (name, shape, kind, stored dtype, bytes) without reading data."""
        return self._checkpoint.entries()

    def __iter__(self) -> Iterator[tuple[str, TernaryWeight | np.ndarray]]:
        for entry in self._checkpoint.entries():
            value = entry.load()
            yield entry.name, value.f32() if isinstance(value, Tensor) else value

    def close(self) -> None:
        self._checkpoint.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@_typed
def open(src: Src, *, revision: str | None = None, **read_options: object) -> Model:  # noqa: A001
    """Open a checkpoint for lazy reading.

    Args:
        src: a checkpoint directory, a .gguf or .safetensors file, or a hub repo id.
        revision: branch, tag or commit of a hub `src`.
        **read_options: `i2s_variant` ("x86"/"arm") or `src_kernel_config` (a TL1/TL2
            kernel_config.ini; found beside the file when left out).

    Returns:
        A `Model`: `.config`, `.family`, `.layout`, and iteration over `(name, TernaryWeight |
        float32 array)`.

    Example:
        >>> with bitnet_pack.open("fixtures/tiny-bitnet") as model:  # doctest: +SKIP
        ...     ternary = {name: w for name, w in model if isinstance(w, bitnet_pack.TernaryWeight)}
    """
    read = _read_only(read_options)
    source = hub.resolve_source(src, revision)
    with about(source.path):
        return Model(_open_checked(source.path, read), source.label)


@_typed
def inspect(src: Src, *, revision: str | None = None, progress: ProgressFactory | None = None,
            hf_names: bool = False, **read_options: object) -> Inspection:
    """Every tensor of SRC: name, stored dtype, shape, layout, beta, share of -1/0/+1.

    Args:
        src: a checkpoint directory, a .gguf or .safetensors file, or a hub repo id.
        revision: branch, tag or commit of a hub `src`.
        progress: a `progress.ProgressFactory`, or None.
        hf_names: name a GGUF's tensors as transformers does (default: as the file does).
        **read_options: as for `open`.

    Returns:
        An `Inspection` (`.kind`, `.layout`, `.notes`, `.tensors`, `.model` summary; `.to_dict()`).

    Example:
        >>> bitnet_pack.inspect("tiny.gguf").layout  # doctest: +SKIP
        'i2_s'
    """
    source = hub.resolve_source(src, revision, progress=progress is not None)
    read = _read_only(read_options)
    with about(source.path):
        if not is_embedding_model(source.path):  # (those are read by embedding_*, which takes no read options)
            _open_checked(source.path, read).close()
        total = source_bytes(source.path)
        with started(progress, total, f"inspect {source.path.name}") as advance:
            report = describe(source.path, advance, hf_names=hf_names, **read.checkpoint_kwargs())
    report.source = source.label if source.is_hub else None
    return report


@_typed
def verify(a: Src, b: Src, *, prompt: str | None = None, ids: list[int] | None = None, tokens: int = 16,
           atol: float = 0.0, numerics: str = "reference", revision_a: str | None = None,
           revision_b: str | None = None, progress: ProgressFactory | None = None,
           strict: bool = False, **read_options: object) -> VerifyReport:
    """Greedy-decode A and B with the bundled kernel and compare the logits at every step.

    Args:
        a, b: checkpoints (paths or hub repo ids), any layouts.
        prompt: text encoded with A's tokenizer (default: a fixed sentence); or `ids`.
        tokens: greedy steps. atol: allowed |diff| of logits.
        numerics: "reference" (fp32) or "bitnet.cpp" (its f16 KV cache).
        progress: a `progress.ProgressFactory`, advanced once per decode pass, or None.
        **read_options: as for `open`, applied to whichever of A and B uses them (a
            UsageError when neither does).
        strict: compare without the roundings B's (or A's) storage declares (TQ's fp16 beta,
            a bf16 weight_scale, an F16 embedding), which are otherwise applied and named.

    Returns:
        A `VerifyReport`: `.ok`, `.first_divergence`, `.cause`, `.summary()`, `.to_dict()`. For
        BitNet embedding models (either side), the encoder runs instead of the decode and the
        pooled embeddings are compared: an `EmbVerifyReport` (`.ok`, `.rows`, `.summary()`);
        `ids` may then be a list of prompts (lists of ids).

    Example:
        >>> bitnet_pack.verify("fixtures/tiny-bitnet", "tiny.gguf", tokens=4).ok  # doctest: +SKIP
        True
    """
    from .engine.generate import check_context
    from .engine.rounding import reconcile
    from .engine.runner import loaded, prompt_ids
    from .proof.verify import check_vocab
    from .proof.verify import verify as compare

    read = _read_only(read_options)
    path_a = hub.resolve_source(a, revision_a).path
    path_b = hub.resolve_source(b, revision_b).path
    if is_embedding_model(path_a) or is_embedding_model(path_b):  # the encoder, pooled embeddings
        from .proof.embedding_verify import verify_paths

        if read_options:
            raise UsageError(f"embedding models take no read options, got {', '.join(sorted(read_options))}")
        prompts = None if ids is None else ([list(ids)] if ids and not isinstance(ids[0], list) else ids)
        return verify_paths(path_a, path_b, prompts, None if prompt is None else [prompt], strict=strict)
    if isinstance(tokens, bool) or not isinstance(tokens, int):
        raise UsageError(f"tokens must be an integer, got {tokens!r}")
    _check_used_by_either(read, [path_a, path_b])
    kwargs = read.checkpoint_kwargs()
    with loaded(path_a, numerics, **kwargs) as side_a, loaded(path_b, numerics, **kwargs) as side_b:
        check_vocab(side_a.model.config.vocab_size, side_b.model.config.vocab_size, f"{a} and {b}")
        default = "BitNet b1.58 stores every weight as" if prompt is None and ids is None else prompt
        prompt_tokens = prompt_ids(ids, default, side_a.tokenizer_json)
        contexts = [side.context for side in (side_a, side_b) if side.context is not None]
        check_context(len(prompt_tokens), tokens, min(contexts, default=None))
        with started(progress, 2 * (tokens + 1), "verify") as advance:
            rounded = "" if strict else reconcile(side_a.model, side_b.model, side_a.plan, side_b.plan)
            return compare(side_a.model, side_b.model, prompt_tokens, tokens, atol=atol, progress=advance,
                           rounded=rounded, strict=strict)


@_typed
def diff(a: Src, b: Src, *, revision_a: str | None = None, revision_b: str | None = None,
         progress: ProgressFactory | None = None, strict: bool = False, stop_early: bool = False,
         **read_options: object) -> WeightDiff:
    """A and B compared tensor by tensor in ternary space (codes and beta; other tensors as
    float32 values) and by their model config; read options as for `verify`. A difference
    that one side's declared rounding of the other's value explains counts as equal and is
    named in `.rounded` (`strict`: none); `stop_early`: stop at the first tensor that differs.

    Returns:
        A `diff.WeightDiff`: `.identical`, `.tensors`, `.only_in_a`, `.only_in_b`, `.config`.
    """
    from .proof.diff import diff_checkpoints

    read = _read_only(read_options)
    path_a = hub.resolve_source(a, revision_a).path
    path_b = hub.resolve_source(b, revision_b).path
    _check_used_by_either(read, [path_a, path_b])
    kwargs = read.checkpoint_kwargs()
    total = source_bytes(path_a) + source_bytes(path_b)
    with started(progress, total, "diff") as advance:
        return diff_checkpoints(path_a, path_b, options_a=kwargs, options_b=kwargs, progress=advance,
                                strict=strict, stop_early=stop_early)


@contextmanager
def load(src: Src, *, numerics: str = "reference", revision: str | None = None,
         **read_options: object) -> Iterator[Loaded]:
    """SRC loaded into the bundled model with its tokenizer (what `verify` and `generate`
    decode with); read options are checked as `open` checks them.

    Example:
        >>> with bitnet_pack.api.load("fixtures/tiny-bitnet") as side:  # doctest: +SKIP
        ...     side.model.config.vocab_size
    """
    from .engine.runner import loaded

    read = _read_only(read_options)
    source = hub.resolve_source(src, revision)
    with about(source.path):
        _open_checked(source.path, read).close()
    with loaded(source.path, numerics, **read.checkpoint_kwargs()) as side:
        yield side


def _check_used_by_either(read: ReadOptions, paths: list[Path]) -> None:
    """Each given read option must be used by at least one of `paths` (UsageError otherwise)."""
    errors = []
    for path in paths:
        try:
            with about(path):
                _open_checked(path, read).close()
            return
        except UsageError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@_typed
def roundtrip(model: Src, layouts: list[str] | None = None, *, revision: str | None = None, tokens: int = 4,
              ids: list[int] | None = None, keep: Src | None = None, progress: ProgressFactory | None = None,
              **read_options: object) -> RoundtripReport:
    """Convert MODEL into every layout that fits (or `layouts`) and back; check nothing changed.

    Args:
        model: a checkpoint (path or hub repo id).
        layouts: layout names or outtypes ("hf" or "hf-packed", "i2_s", ...); default all.
        tokens: greedy steps verified per layout (0: weights only). ids: prompt token ids.
        keep: a directory to keep the intermediate files in (default: a temporary one).
        **read_options: as for `open`.

    Returns:
        A `RoundtripReport`: `.ok`, `.broken`, `.results` per layout, `.to_dict()`.

    Example:
        >>> bitnet_pack.roundtrip("fixtures/tiny-bitnet", ["hf-packed", "i2_s"], tokens=2).ok  # doctest: +SKIP
        True
    """
    from .formats.layouts import get_layout
    from .proof.roundtrip import default_layouts
    from .proof.roundtrip import roundtrip as run

    chosen = [get_layout(name).name for name in layouts] if layouts else None
    read = _read_only(read_options)
    source = hub.resolve_source(model, revision, progress=progress is not None)
    if is_embedding_model(source.path):
        raise UsageError(f"{source.label} is a BitNet embedding model: roundtrip decodes LMs; convert it to each "
                         "outtype and run `verify` on the pair (pooled embeddings) instead")
    if keep is not None:
        Path(keep).mkdir(parents=True, exist_ok=True)
    with about(source.path):
        with _open_checked(source.path, read) as checked:  # default: every layout that takes its family
            family = checked.family
        chosen = chosen or default_layouts(family)
        total = source_bytes(source.path) * len(chosen)
        with started(progress, total, "roundtrip") as advance:
            report = run(source.path, chosen, workdir=Path(keep) if keep is not None else None, prompt_ids=ids,
                         n_tokens=tokens, read_options=read.checkpoint_kwargs(), progress=advance)
    report.model = source.label
    return report


def _read_only(options: dict[str, object]) -> ReadOptions:
    """Read options from keywords; the old `kernel_config` means the source's tilings here."""
    read, write, legacy = split_options(options)
    if write.given():
        raise UsageError(f"{next(iter(write.given()))!r} is an output option, and this reads only")
    return ReadOptions(read.i2s_variant, legacy) if legacy is not None and read.src_kernel_config is None else read
