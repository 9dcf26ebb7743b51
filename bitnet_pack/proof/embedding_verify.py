"""`verify` for the BitNet embedding families: both sides encode one prompt set from their own
bytes (encoder.py) and the L2-normalized pooled vectors are compared bit for bit; cosine and
max |diff| say by how much they differ. When they do, the tensors whose values differ between
the two sides (projections: codes and beta as the kernel reads them; others: float32 values)
are named, which is the cause. A trace (`--record`) holds the prompts and embeddings of one
side for a later `--against`.

Prompts: `ids` as given, else texts encoded with A's (else B's) tokenizer.json with its special
tokens (what sentence-transformers feeds the model), else fixed id sequences; both sides get
the same ids (a GGUF's own add_bos/add_eos flags are llama.cpp's business, not compared here).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import interrupts
from ..containers.outputs import check_output, publish, temp_name
from ..engine.encoder import Encoder
from ..engine.kernel import PackedMatrix
from ..errors import FormatError, UsageError

if TYPE_CHECKING:
    from ..engine.rounding import Plan

DEFAULT_TEXTS = ("query: What is BitNet?", "passage: BitNet b1.58 stores every weight as -1, 0 or +1.", "Hello")
TRACE_KIND = "bitnet-pack embedding trace"
TRACE_VERSION = 1


@dataclass
class PromptDiff:
    ids: list[int]
    identical: bool
    cosine: float
    max_abs_diff: float


@dataclass
class EmbVerifyReport:
    a: str
    b: str
    embedding_size: int
    rows: list[PromptDiff]
    differing_tensors: list[str] = field(default_factory=list)
    rounded: str = ""  # the declared roundings applied before comparing ("" for none, or --strict)

    @property
    def ok(self) -> bool:
        return all(r.identical for r in self.rows)

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}

    def summary(self) -> str:
        lines = [f"{len(self.rows)} prompts, embedding size {self.embedding_size}: "
                 + ("identical embeddings (bit for bit)" + (f" after rounding {self.rounded}" if self.rounded else "")
                    if self.ok else
                    f"{sum(not r.identical for r in self.rows)} differ")]
        for r in self.rows:
            state = "identical" if r.identical else f"cosine {r.cosine:.9f}, max |diff| {r.max_abs_diff:.3g}"
            lines.append(f"  {len(r.ids):>4} tokens: {state}")
        lines += [f"  differs: {t}" for t in self.differing_tensors]
        if self.rounded and not self.ok:
            lines.append(f"  declared roundings applied: {self.rounded}")
        return "\n".join(lines)

    @property
    def cause(self) -> str:
        return ("tensors differ: " + "; ".join(self.differing_tensors[:4])) if self.differing_tensors \
            else "no tensor differs: the float arithmetic does"


def compare(a: np.ndarray, b: np.ndarray, ids: list[int]) -> PromptDiff:
    same = a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
    denominator = np.linalg.norm(wide_a) * np.linalg.norm(wide_b)
    cosine = float(wide_a @ wide_b / denominator) if denominator else 0.0
    return PromptDiff(list(map(int, ids)), bool(same), cosine, float(np.max(np.abs(wide_a - wide_b))))


def differing_tensors(a: Encoder, b: Encoder, used_ids: list[int]) -> list[str]:
    """The tensors whose values (as the encoder uses them) differ, with how many values; of the
    embedding only the rows of the prompts' ids count (other rows never reach the vectors)."""
    found, rows = [], np.unique(np.asarray(used_ids, np.int64))
    for name in a.t:
        x, y = a.t[name], b.t.get(name)
        if name == "token_embd.weight" and y is not None and np.shape(x) == np.shape(y):
            x, y = np.asarray(x)[rows], np.asarray(y)[rows]
        if y is None:
            found.append(f"{name}: absent from B")
            continue
        if isinstance(x, PackedMatrix) and isinstance(y, PackedMatrix):
            codes = int(np.count_nonzero(x.codes() != y.codes()))
            beta = np.float32(x.beta).tobytes() != np.float32(y.beta).tobytes()
            if codes or beta:
                found.append(f"{name}: {codes} codes differ" + (f", beta {x.beta!r} vs {y.beta!r}" if beta else ""))
        elif np.asarray(x).shape != np.asarray(y).shape:
            found.append(f"{name}: shape {list(np.shape(x))} vs {list(np.shape(y))}")
        else:
            count = int(np.count_nonzero(np.asarray(x).view(np.uint32) != np.asarray(y).view(np.uint32)))
            if count:
                found.append(f"{name}: {count} values differ")
    return found


def prompt_set(ids: list[list[int]] | None, texts: list[str] | None, tokenizer_dirs: list[Path],
               vocab: int) -> list[list[int]]:
    if ids:
        return [list(map(int, seq)) for seq in ids]
    tokenizer = next((d / "tokenizer.json" for d in tokenizer_dirs if (d / "tokenizer.json").is_file()), None)
    if tokenizer is not None:
        from tokenizers import Tokenizer

        encoder = Tokenizer.from_file(str(tokenizer))
        return [encoder.encode(text).ids for text in (texts or DEFAULT_TEXTS)]
    if texts:
        raise UsageError("neither side has a tokenizer.json to encode --prompt with: pass --ids")
    return [[(7 * i + 3) % vocab for i in range(n)] for n in (1, 9, 33)]


def reconcile(a: dict, b: dict, plan_a: Plan, plan_b: Plan) -> str:
    """`rounding.reconcile` for two sets of encoder tensors (GGUF name -> PackedMatrix or float32
    array): where one side's float tensor is the other's after the storage's declared rounding
    (an F16 norm), the unrounded side gets the rounded one, in place. Returns what was rounded."""
    from ..engine.rounding import round_values

    for name, x in a.items():
        y = b.get(name)
        if isinstance(x, PackedMatrix) or y is None or isinstance(y, PackedMatrix) or np.shape(x) != np.shape(y):
            continue
        if np.array_equal(np.asarray(x).view(np.uint32), np.asarray(y).view(np.uint32)):
            continue
        for plan, value, other, tensors in ((plan_b, x, y, a), (plan_a, y, x, b)):
            kind = plan.float_kind(name)
            if kind and np.array_equal(round_values(value, kind).view(np.uint32), np.asarray(other).view(np.uint32)):
                tensors[name] = other
                plan.count(name)
                break
    return "; ".join(f"{plan.description()} on {side}" for side, plan in (("A", plan_b), ("B", plan_a))
                     if plan.applied)


def verify_models(a: Encoder, b: Encoder, prompts: list[list[int]], labels: tuple[str, str], *,
                  strict: bool = False) -> EmbVerifyReport:
    """Both sides' pooled embeddings, bit for bit, after the declared roundings (`strict`: none)."""
    if a.hidden != b.hidden:
        raise UsageError(f"embedding sizes differ: {a.hidden} and {b.hidden}")
    rounded = "" if strict else reconcile(a.t, b.t, a.plan, b.plan)
    rows = [compare(a.embed(ids), b.embed(ids), ids) for ids in prompts]
    report = EmbVerifyReport(*labels, a.hidden, rows, rounded=rounded)
    if not report.ok:
        report.differing_tensors = differing_tensors(a, b, [i for ids in prompts for i in ids])
    return report


def open_encoder(path: Path) -> tuple[Encoder, str, Path | None]:
    """The encoder of the embedding model at `path`, its family name, and its folder when it
    has a tokenizer.json there (an HF checkpoint), else None."""
    from ..engine.encoder import Encoder
    from ..pipeline.sources.embedding import open_embedding

    with open_embedding(path) as source:
        return Encoder(source), source.family.name, (source.path if source.kind == "hf" else None)


def verify_paths(a: Path, b: Path, ids: list[list[int]] | None = None, texts: list[str] | None = None, *,
                 strict: bool = False) -> EmbVerifyReport:
    """`verify A B` for two embedding models: each side's encoder from its own bytes over the
    prompt set (`ids`, else `texts` or the default sentences through a tokenizer.json either side
    has), pooled embeddings compared bit for bit after the declared roundings (`strict`: none)."""
    from ..errors import MissingFile
    from ..pipeline.sources.embedding import is_embedding_model

    for path in (a, b):
        if not Path(path).exists():
            raise MissingFile("no such file or directory", path=Path(path))
    if not (is_embedding_model(Path(a)) and is_embedding_model(Path(b))):
        raise UsageError(f"{a} and {b}: only one is a BitNet embedding model, nothing to compare")
    enc_a, _, tok_a = open_encoder(Path(a))
    enc_b, _, tok_b = open_encoder(Path(b))
    prompts = prompt_set(ids, texts, [d for d in (tok_a, tok_b) if d], min(enc_a.vocab, enc_b.vocab))
    return verify_models(enc_a, enc_b, prompts, (str(a), str(b)), strict=strict)


def save_trace(encoder: Encoder, prompts: list[list[int]], path: Path, *, family: str, force: bool,
               inputs: list[Path]) -> tuple[Path, np.ndarray]:
    check_output(path, inputs, force)
    embeddings = np.stack([encoder.embed(ids) for ids in prompts])
    temp = temp_name(path)
    interrupts.track(temp)  # a signal or a full disk leaves nothing behind
    try:
        with open(temp, "wb") as handle:
            np.savez(handle, kind=np.array(TRACE_KIND), version=np.array(TRACE_VERSION), family=np.array(family),
                     pooling=np.array(encoder.pooling), ids=np.concatenate([np.asarray(p, np.int64) for p in prompts]),
                     lengths=np.array([len(p) for p in prompts], np.int64), embeddings=embeddings)
        return publish(temp, path, force=force), embeddings
    finally:
        temp.unlink(missing_ok=True)
        interrupts.untrack(temp)


def is_embedding_trace(path: Path) -> bool:
    """An .npz written by `save_trace`; anything else (a FIFO, a zip bomb, a pickle) is left
    unread for the LM trace reader to refuse."""
    try:
        _checked_archive(Path(path))
        with np.load(path, allow_pickle=False) as data:
            return "kind" in data.files and str(data["kind"]) == TRACE_KIND
    except Exception:  # noqa: BLE001 - not ours: the LM trace reader reports it
        return False


def _checked_archive(path: Path) -> None:
    """A regular file, a zip of `.npy` members that does not inflate past the LM traces' bound."""
    from ..containers.sniff import require_regular
    from .trace import ZIP_MAGICS, check_members

    size = require_regular(path)
    with open(path, "rb") as handle:
        if handle.read(4) not in ZIP_MAGICS:  # np.load would try a pickle, or a lone .npy array
            raise FormatError("not a trace: not an .npz (zip) archive", path=path)
    check_members(path, size)


def load_trace(path: Path) -> tuple[list[list[int]], np.ndarray, str]:
    _checked_archive(Path(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, lengths, embeddings = data["ids"], data["lengths"], data["embeddings"].astype(np.float32)
            family = str(data["family"])
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(f"not a readable embedding trace ({exc})", path=path) from None
    if lengths.sum() != ids.size or embeddings.shape[0] != lengths.size or lengths.min(initial=1) < 1:
        raise FormatError(f"{lengths.size} prompts of {int(lengths.sum())} ids do not match {ids.size} ids and "
                          f"{embeddings.shape[0]} embeddings", path=path)
    prompts = [seq.tolist() for seq in np.split(ids, np.cumsum(lengths)[:-1])]
    return prompts, embeddings, family


def verify_against(encoder: Encoder, path: Path, label: str) -> EmbVerifyReport:
    prompts, embeddings, _family = load_trace(path)
    if embeddings.shape[1] != encoder.hidden:
        raise UsageError(f"the trace's embeddings have {embeddings.shape[1]} values, the model {encoder.hidden}")
    rows = [compare(embeddings[i], encoder.embed(ids), ids) for i, ids in enumerate(prompts)]
    return EmbVerifyReport(str(path), label, encoder.hidden, rows)
