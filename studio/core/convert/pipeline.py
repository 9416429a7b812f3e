"""The reader and writer threads around the compute step, joined by queues of two.

A reader fetches the byte ranges of the next chunk's sources (through
`core/unit_source.py`, the per-unit read seam), the caller's thread computes,
and a writer puts the bytes at their offsets in the output shards and seals
each shard (fsync, checksum, resume record) when its last chunk is written.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from pathlib import Path

from studio.core.convert.chunks import Chunk
from studio.core.checksum import file_digest
from studio.core.model.dequantize import SourceReader, SourceRows
from studio.core.policy.plan import Plan
from studio.core.convert.shard_layout import Layout
from studio.core.model.unit_source import read_unit_rows

END = object()


class Pipe:
    """A bounded queue whose put gives up when the pipeline is stopping."""

    def __init__(self, stop: threading.Event, size: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.stop = stop

    def put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        while True:
            try:
                return self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return END


def write_all(f, offset: int, data: memoryview) -> None:
    """Write all of `data` at `offset` of an unbuffered file (raw writes may be short)."""
    f.seek(offset)
    while data:
        written = f.write(data)
        if not written:
            raise OSError(errno.EIO, "the file accepted no bytes")
        data = data[written:]


class Writer(threading.Thread):
    """Writes byte pieces at their offsets; seals a shard (fsync + record) when told.

    Items: ("write", shard index, offset, numpy array) and
    ("seal", shard index, {unit path: (err, ref)} of its units)."""

    def __init__(self, folder: Path, layout: Layout, record, pipe: Pipe, stop: threading.Event):
        super().__init__(name="configi-convert-writer", daemon=True)
        self.folder, self.layout, self.record, self.pipe, self.stop = folder, layout, record, pipe, stop
        self.files: dict[int, object] = {}
        self.bytes_written = 0
        self.error: BaseException | None = None

    def _file(self, shard_index: int):
        f = self.files.get(shard_index)
        if f is None:
            spec = self.layout.shards[shard_index]
            f = open(self.folder / spec.filename, "wb+", buffering=0)
            write_all(f, 0, memoryview(spec.header))
            f.truncate(spec.file_bytes)
            self.files[shard_index] = f
        return f

    def run(self):
        try:
            while True:
                item = self.pipe.get()
                if item is END:
                    return
                if item[0] == "write":
                    _, shard_index, offset, array = item
                    write_all(self._file(shard_index), offset, memoryview(array).cast("B"))
                    self.bytes_written += array.nbytes
                else:
                    shard_index, errors = item[1], item[2]
                    self._file(shard_index)  # a shard of empty tensors still gets its header
                    f = self.files.pop(shard_index)
                    os.fsync(f.fileno())
                    f.close()
                    spec = self.layout.shards[shard_index]
                    self.record.mark_done(spec, file_digest(self.folder / spec.filename), errors)
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
            self.stop.set()
        finally:
            for f in self.files.values():
                try:
                    f.close()
                except OSError:
                    pass
            self.files.clear()


def read_chunk(reader: SourceReader, plan: Plan, chunk: Chunk) -> list[SourceRows]:
    return read_unit_rows(reader, plan.inventory, plan.units[chunk.unit_index], chunk.first, chunk.stop)


class Reader(threading.Thread):
    """Reads each chunk's source rows in order; an exception is passed down the pipe."""

    def __init__(self, reader: SourceReader, plan: Plan, work: list[Chunk], pipe: Pipe, stop: threading.Event):
        super().__init__(name="configi-convert-reader", daemon=True)
        self.reader, self.plan, self.work, self.pipe, self.stop = reader, plan, work, pipe, stop

    def run(self):
        try:
            for chunk in self.work:
                if self.stop.is_set():
                    return
                if not self.pipe.put((chunk, read_chunk(self.reader, self.plan, chunk))):
                    return
            self.pipe.put(END)
        except BaseException as exc:
            self.pipe.put(exc)
        finally:
            self.reader.close()
