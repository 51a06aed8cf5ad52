"""Overlapped checkpoint reading: disk reads on one thread, host->device copies on another, in chunks.

Contract: `iter_overlapped(files, device, chunk_bytes, num_buffers)` yields (name, tensor on `device`)
for every tensor of every safetensors file, in file order, bit-identical to `safetensors.safe_open`.
A reader thread reads each tensor's raw bytes (in chunks of at most `chunk_bytes`) straight into a ring
of `num_buffers` staging buffers, pinned on CUDA; the caller's thread copies each filled chunk to the
device on a side stream (`non_blocking`: a DMA from pinned memory) and hands the buffer back once the
copy's event has fired, so the disk reads chunk k+1 while the copy engine moves chunk k. A tensor is
yielded once all its chunks are queued; the current stream waits for the side stream first. Pinned
memory stays small (`num_buffers * chunk_bytes`) whatever the model's size: pinning gigabytes costs
more than it saves. On a CPU device the same two threads run and the copies are plain memcpys.
A reader error is raised in the caller's thread; closing the generator early stops the reader.

`read_header(path)` parses the format itself (8-byte little-endian header length, a JSON header of
{name: {dtype, shape, data_offsets}}, then the bytes) so the reader can `readinto` its buffers with no
intermediate copy.
"""
from __future__ import annotations

import json
import queue
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_CHUNK_BYTES = 32 * 2**20  # large enough to run the disk and the PCIe link near their peak
DEFAULT_NUM_BUFFERS = 4  # two in flight each way
_POLL_S = 0.1  # how often a blocked reader checks whether the consumer went away

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def read_header(path: Path) -> list[TensorEntry]:
    """The tensors of one safetensors file, in the order of their bytes on disk."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is not a safetensors file: shorter than its 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        header = json.loads(f.read(length))
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which this reader does not know")
        begin, end = info["data_offsets"]
        entries.append(TensorEntry(name, _DTYPES[info["dtype"]], tuple(info["shape"]), 8 + length + begin, end - begin))
    return sorted(entries, key=lambda e: e.start)


@dataclass(frozen=True)
class _Chunk:
    buffer: int  # index into the ring
    offset: int  # into the tensor's bytes
    nbytes: int


_DONE = object()


def _read(files: Sequence[Path], plan: list[list[TensorEntry]], ring: list[torch.Tensor], chunk_bytes: int,
          free: queue.Queue, filled: queue.Queue, stop: threading.Event) -> None:
    """The reader thread: every tensor's bytes, chunk by chunk, into free ring buffers."""
    try:
        for path, entries in zip(files, plan):
            with open(path, "rb", buffering=0) as f:
                for entry in entries:
                    f.seek(entry.start)
                    for offset in range(0, entry.nbytes, chunk_bytes):
                        while True:  # wait for a buffer whose last copy has finished, unless told to stop
                            if stop.is_set():
                                return
                            try:
                                index, copied = free.get(timeout=_POLL_S)
                                break
                            except queue.Empty:
                                continue
                        if copied is not None:
                            copied.synchronize()  # the device has read this buffer: safe to overwrite
                        nbytes = min(chunk_bytes, entry.nbytes - offset)
                        _read_exactly(f, memoryview(ring[index].numpy())[:nbytes], path)
                        filled.put(_Chunk(index, offset, nbytes))
        filled.put(_DONE)
    except BaseException as exc:  # handed to the consumer, which raises it
        filled.put(exc)


def _read_exactly(f, view: memoryview, path: Path) -> None:
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            raise ValueError(f"{path} ends before the bytes its header promises")
        done += n


def iter_overlapped(files: Sequence[Path], device: torch.device, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                    num_buffers: int = DEFAULT_NUM_BUFFERS) -> Iterator[tuple[str, torch.Tensor]]:
    if chunk_bytes < 1 or num_buffers < 1:
        raise ValueError(f"chunk_bytes and num_buffers must be >= 1, got {chunk_bytes} and {num_buffers}")
    files = [Path(f) for f in files]
    plan = [read_header(f) for f in files]
    cuda = device.type == "cuda"
    ring = [torch.empty(chunk_bytes, dtype=torch.uint8, pin_memory=cuda) for _ in range(num_buffers)]
    side = torch.cuda.Stream(device) if cuda else None
    free: queue.Queue = queue.Queue()
    filled: queue.Queue = queue.Queue()
    for index in range(num_buffers):
        free.put((index, None))
    stop = threading.Event()
    reader = threading.Thread(target=_read, args=(files, plan, ring, chunk_bytes, free, filled, stop),
                              name="checkpoint-reader", daemon=True)
    reader.start()
    try:
        for entry in (e for entries in plan for e in entries):
            dst = _receive(entry, device, ring, side, free, filled)
            yield entry.name, dst.view(entry.dtype).reshape(entry.shape)
        last = filled.get()
        if isinstance(last, BaseException):
            raise last
        if last is not _DONE:
            raise RuntimeError("the checkpoint reader sent more chunks than the headers name")
    finally:
        stop.set()
        reader.join()


def _receive(entry: TensorEntry, device: torch.device, ring: list[torch.Tensor], side, free: queue.Queue,
             filled: queue.Queue) -> torch.Tensor:
    """One tensor's bytes on `device`: its chunks copied as they arrive, each buffer handed back after its copy."""
    if side is None:
        dst = torch.empty(entry.nbytes, dtype=torch.uint8, device=device)
    else:
        with torch.cuda.stream(side):  # allocated where it is written ...
            dst = torch.empty(entry.nbytes, dtype=torch.uint8, device=device)
    received = 0
    while received < entry.nbytes:
        chunk = filled.get()
        if isinstance(chunk, BaseException):
            raise chunk
        if chunk is _DONE:
            raise RuntimeError(f"the checkpoint reader stopped before tensor {entry.name!r} was complete")
        source = ring[chunk.buffer][: chunk.nbytes]
        if side is None:
            dst[chunk.offset : chunk.offset + chunk.nbytes].copy_(source)
            free.put((chunk.buffer, None))
        else:
            with torch.cuda.stream(side):
                dst[chunk.offset : chunk.offset + chunk.nbytes].copy_(source, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(side)
            free.put((chunk.buffer, copied))
        received += chunk.nbytes
    if side is not None:
        current = torch.cuda.current_stream(device)
        current.wait_stream(side)  # the consumer's kernels see the finished bytes ...
        dst.record_stream(current)  # ... and the allocator waits for them before reusing dst's memory
    return dst
