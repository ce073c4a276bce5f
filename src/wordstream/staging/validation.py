"""Validation while hashing: one streaming read decides whether a landing file is text the engines take.

Readable, non-empty, at most ``max_file_bytes``, UTF-8 (incremental decoder, so a character split
across chunks is fine), no NUL byte, no line longer than ``max_line_bytes`` (an engine that gets one
runs out of memory on every retry), in constant memory.

The same read writes the copy that staging publishes (``copy_to``): the bytes published are the
bytes hashed and validated, by construction, and the file is read once (a second read to copy and
re-hash it cost as much CPU as the validation itself, taken from the engines on the same cores).
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
from dataclasses import dataclass

from wordstream.durable import write_all

CHUNK_BYTES = 1024 * 1024
# UTF-8 is checked in slices: decoding a whole 1 MiB chunk makes a throw-away string of up to 4 MiB,
# and glibc's malloc, once such blocks are freed, grows the heap with the file instead of reusing it.
DECODE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Inspection:
    sha256: str | None  # None when rejected: a hash of a partial read would mean nothing
    size: int  # bytes read
    problem: str | None


_LINE_BREAK = re.compile(rb"[\r\n]")


def _long_line(chunk: bytes, offset: int, line_start: int, limit: int) -> tuple[int, int | None]:
    """Scan one chunk (at ``offset`` in the file) for the line breaks the engines split on.

    Returns where the line that continues into the next chunk starts, and the start of a line longer
    than ``limit`` bytes (None if there is none so far).
    """
    if limit >= len(chunk):  # only a line that spans chunks can be too long: look at the ends
        breaks = [i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0]
        if not breaks:
            return line_start, line_start if offset + len(chunk) - line_start > limit else None
        if offset + min(breaks) - line_start > limit:
            return line_start, line_start
        return offset + max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1, None
    for match in _LINE_BREAK.finditer(chunk):
        if offset + match.start() - line_start > limit:
            return line_start, line_start
        line_start = offset + match.end()
    return line_start, line_start if offset + len(chunk) - line_start > limit else None


def inspect_content(fd: int, max_bytes: int, max_line_bytes: int | None = None,
                    copy_to: int | None = None) -> Inspection:
    """Hash and validate an open file in one pass of 1 MiB chunks (constant memory).

    ``max_line_bytes`` rejects a file with a longer line (a line break is ``\\n`` or ``\\r``): the
    engines hold each line, and its split into words, in memory at once. Every chunk that passed its
    checks is also written to ``copy_to`` (an open file); of a rejected file the copy is partial.
    """
    hasher = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    total = 0
    line_start = 0
    while True:
        try:
            chunk = os.read(fd, CHUNK_BYTES)
        except OSError as error:  # of the landing file; a failed write of the copy is raised
            return Inspection(None, total, f"unreadable: {error.strerror}")
        if not chunk:
            break
        start = total
        total += len(chunk)
        if total > max_bytes:
            return Inspection(None, total, f"too large: more than {max_bytes} bytes")
        nul = chunk.find(b"\x00")
        if nul >= 0:
            return Inspection(None, total, f"binary: NUL byte at offset {start + nul}")
        if max_line_bytes is not None:
            line_start, too_long = _long_line(chunk, start, line_start, max_line_bytes)
            if too_long is not None:
                return Inspection(None, total, f"line too long: more than {max_line_bytes} bytes without "
                                               f"a line break, from byte offset {too_long}")
        view = memoryview(chunk)
        for part in range(0, len(chunk), DECODE_BYTES):
            buffered = len(decoder.getstate()[0])
            try:
                decoder.decode(view[part:part + DECODE_BYTES])
            except UnicodeDecodeError as error:
                offset = start + part - buffered + error.start
                return Inspection(None, total, f"not valid UTF-8: {error.reason} at byte offset {offset}")
        hasher.update(chunk)
        if copy_to is not None:
            write_all(copy_to, chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return Inspection(None, total, "not valid UTF-8: truncated multi-byte character at the end")
    if total == 0:
        return Inspection(None, 0, "empty file")
    return Inspection(hasher.hexdigest(), total, None)

