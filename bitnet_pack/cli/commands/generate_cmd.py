"""bitnet-pack generate MODEL --prompt TEXT: greedy text from any checkpoint bitnet-pack reads."""
from __future__ import annotations

from pathlib import Path

import click

from .common import PATH_OR_REPO, emit_json, examples
from .model_io import NUMERICS, loaded


@click.command("generate", epilog=examples(
    "bitnet-pack generate out.gguf --prompt 'Hello' --tokens 8",
    "bitnet-pack generate ./packed --prompt 'Hello' --numerics bitnet.cpp",
    "bitnet-pack generate out.gguf --ids 1,15,27 --tokens 4 --json"))
@click.argument("model", type=PATH_OR_REPO)
@click.option("--prompt", default=None, help="Prompt text (or --ids).")
@click.option("--ids", default=None, help="Prompt token ids instead of --prompt, e.g. 1,15,27.")
@click.option("--tokens", default=32, show_default=True, type=click.IntRange(1),
              help="New tokens at most; with the prompt, at most the model's context (max_position_embeddings).")
@click.option("--numerics", type=click.Choice(NUMERICS), default="reference", show_default=True)
@click.option("--revision", default=None, help="Branch, tag or commit when MODEL is a hub repo id.")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="kernel_config.ini for TL1/TL2 GGUFs that do not carry their tiling.")
@click.option("--json", "as_json", is_flag=True,
              help="Prompt ids, generated ids, text and whether EOS ended it, as JSON on stdout.")
def command(model: str, prompt: str | None, ids: str | None, tokens: int, numerics: str, revision: str | None,
            kernel_config: Path | None, as_json: bool) -> None:
    """Print the greedy continuation of --prompt or --ids (the checkpoint's own tokenizer)."""
    from ...engine.generate import generate
    from ...engine.runner import prompt_ids
    from ...errors import UsageError

    if (prompt is None) == (ids is None):
        raise UsageError("give exactly one of --prompt TEXT or --ids 1,2,3")
    chosen = prompt_ids(ids, None, Path()) if ids is not None else None
    with loaded(model, numerics, kernel_config, revision) as side:
        result = generate(side.model, side.tokenizer_json, prompt, tokens, context=side.context, ids=chosen)
    if as_json:
        emit_json(result.to_dict() | {"numerics": numerics})
    else:
        click.echo(result.text)
