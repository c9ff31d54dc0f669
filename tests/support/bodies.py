"""Deterministic generated bodies: any size, produced chunk by chunk, never held whole.

Chunk `i` is a fixed pseudo-random MiB rotated by a different amount each time, so a body
that lost, repeated or reordered a chunk has a different checksum. The origin streams
`pattern_chunks(size)`; a client checks what it read against `pattern_digest(size)`.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK = 1 << 20
_BLOCK = random.Random(20261125).randbytes(CHUNK)


def pattern_chunks(size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The `size` bytes of the generated body, in pieces of at most `chunk` bytes."""
    index = 0
    sent = 0
    while sent < size:
        shift = (index * 7919) % CHUNK
        piece = _BLOCK[shift:] + _BLOCK[:shift]
        wanted = min(chunk, size - sent)
        yield piece[:wanted]
        sent += wanted
        index += 1


def pattern_bytes(size: int) -> bytes:
    """The generated body in memory: only for small sizes."""
    return b"".join(pattern_chunks(size))


@dataclass
class Digest:
    """Length and CRC-32 of a byte stream, fed piece by piece."""

    length: int = 0
    crc: int = 0

    def update(self, data: bytes) -> None:
        self.length += len(data)
        self.crc = zlib.crc32(data, self.crc)


def pattern_digest(size: int) -> Digest:
    """The Digest a correct reader of the generated body of `size` bytes ends with."""
    digest = Digest()
    for piece in pattern_chunks(size):
        digest.update(piece)
    return digest
