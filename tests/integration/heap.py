"""PostgreSQL heap and index pages read straight from the data files, as a thief with the disk
would.

The pgserver build has no pageinspect, so this reads the page layout itself (PostgreSQL's
``bufpage.h``, ``itemid.h``, ``htup_details.h``): every line pointer of every page, and for
each tuple its ``xmin``, ``xmax`` and first two columns. A deleted tuple that VACUUM has not
yet removed is still there with its ``xmax`` set: that is an old row version. One VACUUM did
remove has no line pointer any more, but its bytes stay in the page's free space until
something overwrites them: ``free_space_keys`` finds them by the poll's uuid. The primary-key
index keeps (poll, id) keys: ``index_keys`` reads them from the index's file.

Independent of ``privpoll audit --files``, which does the same for a copied data folder.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

LP_NORMAL = 1
LP_DEAD = 3
HEAP_XMAX_INVALID = 0x0800


@dataclass(frozen=True)
class Tuple:
    xmin: int
    xmax: int
    infomask: int
    poll: uuid.UUID
    key: bytes

    @property
    def deleted(self) -> bool:
        return self.xmax != 0 and not self.infomask & HEAP_XMAX_INVALID


@dataclass(frozen=True)
class Heap:
    tuples: list[Tuple]
    dead_pointers: int
    # Per page, the bytes no line pointer of a tuple covers: free space and let-go tuples.
    uncovered: list[bytes]

    def of(self, poll: uuid.UUID) -> list[Tuple]:
        return [t for t in self.tuples if t.poll == poll]

    def free_space_keys(self, poll: uuid.UUID) -> set[bytes]:
        """Ids of the poll's tuples found in no line pointer: in free space."""
        return _keys_after(self.uncovered, poll)


def _file(conn: psycopg.Connection[Any], cluster: Path, relation: str) -> bytes:
    conn.execute("CHECKPOINT")  # shared buffers to disk, so the files are up to date
    row = conn.execute("SELECT pg_relation_filepath(%s::regclass)", (relation,)).fetchone()
    assert row is not None
    base = cluster / str(row[0])
    return b"".join(
        p.read_bytes() for p in [base, *sorted(base.parent.glob(f"{base.name}.[0-9]*"))]
    )


def _keys_after(chunks: list[bytes], poll: uuid.UUID) -> set[bytes]:
    """The 16 bytes after each occurrence of the poll's uuid that look like a random id: a
    uuid4 (as the sinks write them) or a uuid8 (the same 122 random bits, as re-mixed)."""
    found: set[bytes] = set()
    for chunk in chunks:
        at = chunk.find(poll.bytes)
        while at != -1:
            key = chunk[at + 16 : at + 32]
            if len(key) == 16 and key[6] >> 4 in (4, 8) and key[8] >> 6 == 0b10:
                found.add(key)
            at = chunk.find(poll.bytes, at + 1)
    return found


def index_keys(
    conn: psycopg.Connection[Any], cluster: Path, index: str, poll: uuid.UUID
) -> set[bytes]:
    """The ids the index file still holds for the poll (live and old alike)."""
    return _keys_after([_file(conn, cluster, index)], poll)


def read(conn: psycopg.Connection[Any], cluster: Path, table: str) -> Heap:
    """Every tuple on disk of ``table`` (whose first column is the poll uuid)."""
    data = _file(conn, cluster, table)
    size = conn.execute("SELECT current_setting('block_size')::int").fetchone()
    assert size is not None
    block = int(size[0])
    tuples: list[Tuple] = []
    uncovered: list[bytes] = []
    dead = 0
    for start in range(0, len(data), block):
        page = data[start : start + block]
        lower = struct.unpack_from("<H", page, 12)[0]
        if lower == 0:
            continue  # a new, never initialised page
        rest = bytearray(page)
        rest[:lower] = bytes(lower)
        for pointer in range(24, lower, 4):
            word = struct.unpack_from("<I", page, pointer)[0]
            offset, flags, length = word & 0x7FFF, (word >> 15) & 0x3, word >> 17
            if flags == LP_DEAD:
                dead += 1
            if flags != LP_NORMAL or length == 0:
                continue
            xmin, xmax = struct.unpack_from("<II", page, offset)
            infomask = struct.unpack_from("<H", page, offset + 20)[0]
            hoff = page[offset + 22]
            poll = uuid.UUID(bytes=page[offset + hoff : offset + hoff + 16])
            key = page[offset + hoff + 16 : offset + hoff + 32]
            tuples.append(Tuple(xmin, xmax, infomask, poll, key))
            rest[offset : offset + length] = bytes(length)
        uncovered.append(bytes(rest))
    return Heap(tuples, dead, uncovered)
