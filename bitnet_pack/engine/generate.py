"""Greedy text generation with a checkpoint's `tokenizer.json` (HF `tokenizers`).

BOS follows the tokenizer: its post-processor adds it when it says so (Llama 3's
TemplateProcessing does); otherwise `add_bos_token: true` in a `tokenizer_config.json`
beside it prepends `bos_token`. Nothing is added when neither asks (transformers does the
same: tiny-a's LlamaTokenizer encodes without BOS). Decoding stops at the first EOS: the
tokenizer_config.json `eos_token` or any `eos_token_id` (an int or a list) of a
generation_config.json beside it.

The prompt and the new tokens together must fit the model's context
(`max_position_embeddings`): that is checked before anything is decoded, so a long prompt or
a large token count is refused at once instead of running past the context or allocating
attention scores the machine does not have.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import MissingFile, UsageError
from ..families.tokenizers.metadata import read_json, token_text
from .model import BitNetModel


def load_tokenizer(tokenizer_json_path: str | Path):
    from tokenizers import Tokenizer

    path = Path(tokenizer_json_path)
    if not path.is_file():
        raise MissingFile("tokenizer.json is missing", path=path)
    return Tokenizer.from_file(str(path))


def encode_prompt(tokenizer, prompt: str, tokenizer_json_path: str | Path) -> list[int]:
    """Token ids of `prompt` with BOS exactly where the tokenizer's files put it."""
    ids = tokenizer.encode(prompt, add_special_tokens=True).ids
    bos = _configured_bos(tokenizer, Path(tokenizer_json_path).parent)
    if bos is not None and ids[:1] != [bos]:
        ids = [bos, *ids]
    if not ids:
        raise UsageError("the prompt encodes to no tokens")
    return ids


def _special_id(tokenizer, config: dict, key: str) -> int | None:
    token = token_text(config.get(key))
    return None if token is None else tokenizer.token_to_id(token)


def _read_json(path: Path) -> dict:
    return read_json(path) or {}


def _read_tokenizer_config(directory: Path) -> dict:
    return _read_json(directory / "tokenizer_config.json")


def eos_ids(tokenizer, directory: Path) -> set[int]:
    """Ids that end generation, from tokenizer_config.json and generation_config.json."""
    found = _read_json(directory / "generation_config.json").get("eos_token_id")
    ids = set(found if isinstance(found, list) else [] if found is None else [found])
    eos = _special_id(tokenizer, _read_tokenizer_config(directory), "eos_token")
    return ids | ({eos} if eos is not None else set())


def _configured_bos(tokenizer, directory: Path) -> int | None:
    """BOS id when tokenizer_config.json sets add_bos_token true, else None."""
    config = _read_tokenizer_config(directory)
    return _special_id(tokenizer, config, "bos_token") if config.get("add_bos_token") is True else None


MAX_POSITIONS = 1 << 20  # the bound when a model states no max_position_embeddings


def context_length(config: dict) -> int | None:
    """max_position_embeddings of a transformers config (None when it does not say)."""
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_context(prompt_tokens: int, n_tokens: int, context: int | None) -> None:
    """The prompt and `n_tokens` new tokens fit in `context` positions (None: no bound known)."""
    if n_tokens < 1:
        raise UsageError(f"the number of new tokens must be >= 1, got {n_tokens}")
    if context is None and prompt_tokens + n_tokens > MAX_POSITIONS:  # no context known: still bounded
        raise UsageError(f"the prompt ({prompt_tokens} tokens) and {n_tokens} new tokens exceed "
                         f"{MAX_POSITIONS} positions")
    if context is not None and prompt_tokens + n_tokens > context:
        raise UsageError(f"the prompt ({prompt_tokens} tokens) and {n_tokens} new tokens need "
                         f"{prompt_tokens + n_tokens} positions; the model's context "
                         f"(max_position_embeddings) is {context}")


@dataclass(frozen=True)
class Generation:
    """What `generate` made: ids up to (not including) the first EOS, and their text."""

    prompt: str
    prompt_ids: list[int]
    ids: list[int]
    text: str
    stopped_at_eos: bool

    def to_dict(self) -> dict:
        return asdict(self)


def generate(model: BitNetModel, tokenizer_json_path: str | Path, prompt: str | None, n_tokens: int, *,
             context: int | None = None, ids: list[int] | None = None) -> Generation:
    """Greedy-decode up to `n_tokens` after `prompt`, or after the token `ids` given instead
    (stops at EOS), within `context` positions."""
    tokenizer = load_tokenizer(tokenizer_json_path)
    if ids is not None:
        prompt_ids = list(ids)
        prompt = tokenizer.decode(prompt_ids, skip_special_tokens=False)
    else:
        prompt_ids = encode_prompt(tokenizer, prompt or "", tokenizer_json_path)
    check_context(len(prompt_ids), n_tokens, context)
    ids, _ = model.generate_ids(prompt_ids, n_tokens)
    stops = eos_ids(tokenizer, Path(tokenizer_json_path).parent)
    ended = next((i for i, token in enumerate(ids) if token in stops), len(ids))
    return Generation(prompt, prompt_ids, ids[:ended], tokenizer.decode(ids[:ended], skip_special_tokens=True),
                      ended < len(ids))


def generate_text(model: BitNetModel, tokenizer_json_path: str | Path, prompt: str, n_tokens: int, *,
                  context: int | None = None) -> str:
    """Greedy-decode up to `n_tokens` after `prompt`; the new text only (stops at EOS)."""
    return generate(model, tokenizer_json_path, prompt, n_tokens, context=context).text
