"""One interruption policy for the command line: SIGINT and SIGTERM, from the first line of
start-up to the last, whatever thread is busy.

`install()` runs first thing in the `bitnet-pack` entry point (before click, numpy or the
kernel are imported). The handler does not raise into whatever the main thread was doing:
an exception delivered between a lock's acquire and its `with` block leaves that lock held,
and the worker threads then wait on it forever (the futex hang an interrupt used to cause
about once in 150 runs). Instead it deletes the outputs in progress (`track`), prints one
line and ends the process at once with 128 + the signal number (130 for SIGINT, 143 for
SIGTERM), joining no thread. Inside `deferred()` (an output's final rename) a signal waits
until the section ends, so an output is never half renamed.

This module imports nothing of the project, so the handler works while the rest loads.
Library users who never call `install()` keep Python's KeyboardInterrupt.
"""
from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_installed = False
_critical = 0
_pending: int | None = None
_in_progress: dict[Path, None] = {}  # insertion-ordered set of temporary outputs
_published: list[Path] = []


def install() -> None:
    """Route SIGINT and SIGTERM to `_handle` (the command line's policy), and SIGBUS (an input
    truncated by someone else while it is memory-mapped) to `_bus_error`."""
    global _installed
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    _install_bus_handler()
    _installed = True


_bus_handler = None  # the C-callable handler, kept alive


def _install_bus_handler() -> None:
    """SIGBUS is raised on the faulting instruction: Python's own handler only sets a flag and
    returns to the same instruction, so the handler is a C callback (ctypes) that runs at once,
    in the faulting thread: it removes the outputs in progress, says so and exits 1."""
    global _bus_handler
    if _bus_handler is not None or not hasattr(signal, "SIGBUS"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int)
        libc.signal.argtypes, libc.signal.restype = (ctypes.c_int, handler_type), ctypes.c_void_p
        _bus_handler = handler_type(_bus_error)
        libc.signal(signal.SIGBUS, _bus_handler)
    except (OSError, AttributeError):  # no C library to ask: the default action stays
        _bus_handler = None


def _bus_error(_signum: int) -> None:
    for temp in list(_in_progress):
        _remove(temp)
    done = f"after writing {', '.join(map(str, _published))}" if _published else "nothing was written"
    try:
        os.write(2, f"Error: an input file shrank while it was being read (SIGBUS: another process truncated "
                    f"or replaced it); {done}\n".encode())
    except OSError:
        pass
    os._exit(1)


def installed() -> bool:
    return _installed


def track(temp: Path) -> None:
    """`temp` is an output being built: an interrupt deletes it."""
    _in_progress[Path(temp)] = None


def untrack(temp: Path) -> None:
    _in_progress.pop(Path(temp), None)


def published(final: Path) -> None:
    """`final` is complete: an interrupt after this says so instead of "nothing was written"."""
    _published.append(Path(final))


@contextmanager
def deferred() -> Iterator[None]:
    """A section a signal must not cut (renames that publish an output): it is acted on at
    the end of the section instead."""
    global _critical
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if not _critical and _pending is not None:
            _stop(_pending)


def _handle(signum: int, _frame: object) -> None:
    global _pending
    if _critical:
        _pending = signum
        return
    _stop(signum)


def _stop(signum: int) -> None:
    for each in SIGNALS:  # a second Ctrl-C while cleaning up changes nothing
        signal.signal(each, signal.SIG_IGN)
    for temp in list(_in_progress):
        _remove(temp)
    name = signal.Signals(signum).name
    done = f"after writing {', '.join(map(str, _published))}" if _published else "nothing was written"
    try:
        os.write(2, f"Error: interrupted ({name}); {done}\n".encode())
    except OSError:  # stderr closed: the exit code still says it
        pass
    os._exit(128 + signum)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
