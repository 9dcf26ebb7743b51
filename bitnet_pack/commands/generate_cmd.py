"""bitnet-pack generate MODEL --prompt TEXT: greedy text from any checkpoint bitnet-pack reads."""
from __future__ import annotations

from pathlib import Path

import click

from .common import examples
from .model_io import loaded


@click.command("generate", epilog=examples(
    "bitnet-pack generate out.gguf --prompt 'Hello' --tokens 8",
    "bitnet-pack generate ./packed --prompt 'Hello' --numerics bitnet.cpp"))
@click.argument("model", type=str)
@click.option("--prompt", required=True, help="Prompt text.")
@click.option("--tokens", default=32, show_default=True, type=click.IntRange(1), help="New tokens at most.")
@click.option("--numerics", type=click.Choice(["reference", "bitnet.cpp"]), default="reference", show_default=True)
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="kernel_config.ini for TL1/TL2 GGUFs that do not carry their tiling.")
def command(model: str, prompt: str, tokens: int, numerics: str, kernel_config: Path | None) -> None:
    """Print the greedy continuation of --prompt (the checkpoint's own tokenizer)."""
    from ..generate import generate_text

    with loaded(model, numerics, kernel_config) as (bitnet, tokenizer):
        click.echo(generate_text(bitnet, tokenizer, prompt, tokens))
