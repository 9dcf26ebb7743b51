"""The `bitnet-pack` command line: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 ok, 1 failure (bad input, I/O), 2 usage, 3 verification mismatch.
Data goes to stdout (tables, or JSON with --json); progress, notes and errors to stderr.
"""
from __future__ import annotations

import os
import sys
import traceback

import click

from .._version import __version__
from ..errors import EXIT_FAILURE, BitnetPackError

NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
EPILOG = ("Exit codes: 0 ok, 1 failure, 2 usage, 3 verification mismatch. "
          "Set BITNET_PACK_DEBUG=1 or pass --debug for tracebacks.")


def _debug_wanted() -> bool:
    return os.environ.get("BITNET_PACK_DEBUG", "") not in ("", "0")


class Group(click.Group):
    """Turns library errors into one line on stderr and the documented exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's own errors (usage, bad option values, a missing option) are one line too,
        instead of its usage block and hint: `Error: ...`, exit 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NO_ARGS_IS_HELP as exc:  # `bitnet-pack` alone: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            command = f" {exc.ctx.command_path}" if getattr(exc, "ctx", None) is not None else ""
            hint = f" (see{command} --help)" if isinstance(exc, click.UsageError) else ""
            self._fail(" ".join(exc.format_message().split()) + hint, exc.exit_code)
        except click.Abort:  # KeyboardInterrupt outside a command (click turns it into Abort)
            self._fail("interrupted (SIGINT); nothing was written", 130)
        sys.exit(code if isinstance(code, int) else 0)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """`--debug` is accepted anywhere on the line, not only before the command."""
        if "--debug" in args:
            os.environ["BITNET_PACK_DEBUG"] = "1"
            args = [a for a in args if a != "--debug"]
        if {"-q", "--quiet"} & set(args):  # after the command too, as most tools take it
            args = ["--quiet", *(a for a in args if a not in ("-q", "--quiet"))]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BitnetPackError as exc:
            self._fail(str(exc), exc.exit_code)
        except BrokenPipeError:  # `bitnet-pack inspect ... | head`: the reader left, not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:  # in-process callers; the console script's policy is `interrupts`
            self._fail("interrupted (SIGINT); nothing was written", 130)
        except (OSError, MemoryError) as exc:
            self._fail(f"{type(exc).__name__}: {exc}", EXIT_FAILURE)
        except Exception as exc:  # a bug: still one line, unless asked for the traceback
            self._fail(f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it",
                       EXIT_FAILURE)

    @staticmethod
    def _fail(message: str, code: int) -> None:
        if _debug_wanted() and sys.exc_info()[0] is not None:
            traceback.print_exc()
        click.echo(f"Error: {message}", err=True)
        sys.exit(code)


def _version_text() -> str:
    from ..engine.kernel import BACKEND

    return f"bitnet-pack {__version__} (kernel: {BACKEND})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(cls=Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the kernel path in use.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (or BITNET_PACK_DEBUG=1); "
              "accepted anywhere on the line.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no notes: results and errors only.")
def main(debug: bool, quiet: bool) -> None:
    """Move BitNet b1.58 models between layouts, and prove nothing changed on the way.

    Shell completion (bash; zsh and fish alike): eval "$(_BITNET_PACK_COMPLETE=bash_source bitnet-pack)"
    """
    from ..pipeline.progress import set_quiet

    set_quiet(quiet)


def _register_commands() -> None:
    from .commands import convert_cmd, diff_cmd, generate_cmd, inspect_cmd, roundtrip_cmd, verify_cmd

    for module in (convert_cmd, inspect_cmd, verify_cmd, generate_cmd, diff_cmd, roundtrip_cmd):
        main.add_command(module.command)


_register_commands()
