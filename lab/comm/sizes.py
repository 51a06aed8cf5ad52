"""Message sizes of a collective sweep: "1M" -> bytes, the geometric range, and a short label for a size.

Contract: `parse_size("64K")` -> 65536. Suffixes K, M and G (optionally followed by `iB` or `B`) are powers of
1024, as nccl-tests reads its -b/-e options; a bare number is bytes. `message_sizes(min, max, factor)` is every
size min, min*factor, ... up to max inclusive (nccl-tests' -f). `format_size(65536)` -> "64 KiB".
A malformed or non-positive size raises `LabError` naming the text.
"""
from __future__ import annotations

import re

from lab.errors import LabError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise LabError(f"not a message size: {text!r} (a byte count, or a number with K, M or G: 8, 64K, 1M, 1G)")
        value = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if value < 1:
        raise LabError(f"a message size must be at least 1 byte, got {text!r}")
    return value


def message_sizes(min_bytes: int, max_bytes: int, factor: int) -> tuple[int, ...]:
    if min_bytes > max_bytes:
        raise LabError(f"size range inverted: min {format_size(min_bytes)} is above max {format_size(max_bytes)}")
    if factor < 2:
        raise LabError(f"the size factor must be an integer of at least 2, got {factor}")
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= factor
    return tuple(sizes)


def format_size(size_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size_bytes >= scale and size_bytes % scale == 0:
            return f"{size_bytes // scale} {unit}"
    return f"{size_bytes} B"
