"""The `bitnet-pack` console script: the interruption policy first, then the command line.

Kept apart from `cli` so that nothing (click, numpy, the kernel) is imported before
SIGINT/SIGTERM are handled: an interrupt during start-up ends the run like any other, with
one line and exit 130/143 (see `interrupts`).
"""
from __future__ import annotations


def main() -> None:
    from .. import interrupts

    interrupts.install()
    import sys

    if sys.stdout is None:  # started with stdout closed (`>&-`): results would vanish
        _closed_stdout()
    import warnings

    warnings.showwarning = _one_line_warning
    from .main import main as command_line

    try:
        command_line(prog_name="bitnet-pack")
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _leave(code: object) -> None:
    """Exit with `code` without Python's teardown, which restores the default signal actions
    (a signal then kills the process without a word) and joins idle worker threads: every
    file is closed and renamed by now. atexit callbacks still run (with the handlers in
    place), then the standard streams are flushed."""
    import atexit
    import os
    import sys

    getattr(atexit, "_run_exitfuncs", lambda: None)()

    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # AttributeError: a closed standard stream is None
            pass
    os._exit(code)


def _closed_stdout() -> None:
    import os

    try:
        os.write(2, b"Error: stdout is closed: results and --json output have nowhere to go\n")
    except OSError:
        pass
    os._exit(1)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning that escapes the library is one `note:` line, without the source line that
    Python prints under it (the library handles numpy's floating-point warnings itself)."""
    import sys

    text = " ".join(str(message).split())
    try:
        (file or sys.stderr).write(f"note: {category.__name__}: {text}\n")
    except OSError:
        pass
