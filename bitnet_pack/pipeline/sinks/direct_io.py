"""Output files written around the page cache (O_DIRECT), for the bulk of a large output.

A buffered write copies every byte into page-cache pages the kernel must first find and
zero, and fsync then writes them all back; on a small VM that is most of a conversion's
system time. Here bytes are gathered into a few reused page-aligned buffers that a
background thread hands straight to the device while the conversion goes on.

O_DIRECT moves whole ALIGN-byte blocks at ALIGN-aligned offsets, so:

    write(data, offset)      |..head..|=========== whole blocks ===========|..tail..|
                             ^ partial block: kept until all its bytes have arrived,
                               then written (each byte of the file is written once)

    flush()                  every byte written so far on the device (blocks still partial
                             are written padded with zeros, and again when they fill up);
                             the file is then cut to `size`

`open_direct` returns None where the filesystem refuses O_DIRECT (tmpfs, some network
filesystems); callers then keep buffered writes. `DirectFile` is the sequential form the
GGUF writer uses (a file object continuing after a header written the ordinary way).
"""
from __future__ import annotations

import mmap
import os
import queue
import threading
from pathlib import Path

ALIGN = 4096
BUFFER_BYTES = 8 << 20
BUFFERS = 3


def open_direct(path: Path) -> DirectWriter | None:
    """A DirectWriter on the existing file `path`, or None if O_DIRECT is not available."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return DirectWriter(path)
    except OSError:
        return None


class DirectWriter:
    """Positioned writes, each byte once, through O_DIRECT (see the module docstring)."""

    def __init__(self, path: Path):
        self._fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        self.size = 0
        self._partial: dict[int, tuple[bytearray, int]] = {}  # block -> (bytes, how many arrived)
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(BUFFERS):
            self._free.put(mmap.mmap(-1, BUFFER_BYTES))
        self._run: tuple[mmap.mmap, int, int] | None = None  # buffer, file offset, bytes filled
        self._todo: queue.Queue[tuple[mmap.mmap, int, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._writer, name="bitnet-pack-direct-io", daemon=True)
        self._thread.start()

    # -- the background thread -----------------------------------------------------------
    def _writer(self) -> None:
        while (job := self._todo.get()) is not None:
            buffer, position, length = job
            try:
                if self._error is None:
                    _pwrite_all(self._fd, memoryview(buffer)[:length], position)
            except BaseException as exc:  # reported by the next write or flush
                self._error = exc
            finally:
                self._free.put(buffer)
                self._todo.task_done()
        self._todo.task_done()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    # -- writing -----------------------------------------------------------------------
    def write(self, data: object, offset: int) -> None:
        self._check()
        view = memoryview(data).cast("B")
        end = offset + len(view)
        self.size = max(self.size, end)
        first, last = -(-offset // ALIGN) * ALIGN, end // ALIGN * ALIGN
        if first >= last:  # inside one block, or across one boundary without a whole block
            self._gather(view, offset)
            return
        self._gather(view[:first - offset], offset)
        self._append(view[first - offset:last - offset], first)
        self._gather(view[last - offset:], last)

    def _gather(self, view: memoryview, offset: int) -> None:
        """Bytes of partial blocks: kept until their block is complete."""
        while view:
            block = offset // ALIGN
            take = min(len(view), (block + 1) * ALIGN - offset)
            data, arrived = self._partial.get(block, (bytearray(ALIGN), 0))
            data[offset - block * ALIGN:offset - block * ALIGN + take] = view[:take]
            if arrived + take == ALIGN:
                self._partial.pop(block, None)
                self._append(memoryview(data), block * ALIGN)
            else:
                self._partial[block] = (data, arrived + take)
            view, offset = view[take:], offset + take

    def _append(self, view: memoryview, offset: int) -> None:
        """Whole blocks at an aligned offset: into the current run if they continue it."""
        while view:
            if self._run is None or self._run[1] + self._run[2] != offset or self._run[2] == BUFFER_BYTES:
                self._submit()
                self._run = (self._free.get(), offset, 0)
            buffer, start, filled = self._run
            take = min(len(view), BUFFER_BYTES - filled)
            buffer[filled:filled + take] = view[:take]
            self._run = (buffer, start, filled + take)
            view, offset = view[take:], offset + take

    def _submit(self) -> None:
        if self._run is not None and self._run[2]:
            self._todo.put(self._run)
        elif self._run is not None:
            self._free.put(self._run[0])
        self._run = None

    # -- ending ------------------------------------------------------------------------
    def flush(self) -> None:
        """Every byte written so far on the device; the file cut to `size`."""
        self._submit()
        self._todo.join()
        self._check()
        buffer = self._free.get()
        try:
            for block, (data, _) in sorted(self._partial.items()):
                buffer[:ALIGN] = data
                _pwrite_all(self._fd, memoryview(buffer)[:ALIGN], block * ALIGN)
        finally:
            self._free.put(buffer)
        os.ftruncate(self._fd, self.size)

    def fileno(self) -> int:
        return self._fd

    def close(self, flush: bool = True) -> None:
        """Flush and close; after a failed write, or with flush=False, only close."""
        if self._fd < 0:
            return
        try:
            if flush and self._error is None:
                self.flush()
        finally:
            self._todo.put(None)
            self._thread.join()
            os.close(self._fd)
            self._fd = -1


class DirectFile:
    """A sequential file object (write, flush, fileno, close) that continues `path` at
    `offset`; the bytes before it were written the ordinary way and are read back for the
    block they share with what follows."""

    def __init__(self, path: Path, offset: int):
        self._writer = DirectWriter(path)
        base = offset // ALIGN * ALIGN
        with open(path, "rb") as head:
            head.seek(base)
            self._writer.write(head.read(offset - base), base)
        self._position = offset

    def write(self, data: object) -> int:
        view = memoryview(data).cast("B")
        self._writer.write(view, self._position)
        self._position += len(view)
        return len(view)

    def flush(self) -> None:
        self._writer.flush()

    def fileno(self) -> int:
        return self._writer.fileno()

    def close(self, flush: bool = True) -> None:
        self._writer.close(flush=flush)


def open_direct_file(path: Path, offset: int) -> DirectFile | None:
    """A DirectFile continuing `path` at `offset`, or None if O_DIRECT is not available."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return DirectFile(path, offset)
    except OSError:
        return None


def _pwrite_all(fd: int, view: memoryview, position: int) -> None:
    while view:
        written = os.pwrite(fd, view, position)
        view, position = view[written:], position + written
