"""PostgreSQL heap pages read straight from the data files, as a thief with the disk would.

The pgserver build has no pageinspect, so this reads the page layout itself (PostgreSQL's
``bufpage.h``, ``itemid.h``, ``htup_details.h``): every line pointer of every page, and for
each tuple its ``xmin``, ``xmax`` and first column. A deleted tuple that VACUUM has not yet
removed is still there with its ``xmax`` set: that is an old row version.
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

    @property
    def deleted(self) -> bool:
        return self.xmax != 0 and not self.infomask & HEAP_XMAX_INVALID


@dataclass(frozen=True)
class Heap:
    tuples: list[Tuple]
    dead_pointers: int

    def of(self, poll: uuid.UUID) -> list[Tuple]:
        return [t for t in self.tuples if t.poll == poll]


def read(conn: psycopg.Connection[Any], cluster: Path, table: str) -> Heap:
    """Every tuple on disk of ``table`` (whose first column is the poll uuid)."""
    conn.execute("CHECKPOINT")  # shared buffers to disk, so the files are up to date
    row = conn.execute("SELECT pg_relation_filepath(%s::regclass)", (table,)).fetchone()
    size = conn.execute("SELECT current_setting('block_size')::int").fetchone()
    assert row is not None
    assert size is not None
    block = int(size[0])
    base = cluster / str(row[0])
    data = b"".join(
        p.read_bytes() for p in [base, *sorted(base.parent.glob(f"{base.name}.[0-9]*"))]
    )
    tuples: list[Tuple] = []
    dead = 0
    for start in range(0, len(data), block):
        page = data[start : start + block]
        lower = struct.unpack_from("<H", page, 12)[0]
        if lower == 0:
            continue  # a new, never initialised page
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
            tuples.append(Tuple(xmin, xmax, infomask, poll))
    return Heap(tuples, dead)
