"""``privpoll audit --files DIR``: the thief who copied the files of a ``privpoll up`` data folder.

A thief with files does not ask the database; it reads bytes. For each poll this reports what
the copy gives back:

- **heap**: every row version of the vote tables in the table files, by line pointer (live and
  deleted) and by the raw bytes of free space (a tuple VACUUM unlinked is still there until
  the page is rewritten), each with the transaction (``xmin``) that wrote it;
- **indexes**: every (poll, id) key in the primary-key indexes, the ones of rows long gone
  among them;
- **WAL**: every (poll, id) a segment still holds, read as raw bytes (recycled segments
  included), and the transactions that wrote the vote tables with their commit times, read
  through the bundled ``pg_waldump``;
- **the queue's store**: whether the poll's stream and voters bucket are there, and how many
  envelopes and voter keys are readable in it.

Only the file names of the catalog come from a running server: a second copy of the cluster is
started on a free port to read ``pg_class`` and the poll uids (``privpoll.local.embedded.
running_copy``), and thrown away; the files read are those of the copy the thief was given,
untouched. Nothing reported joins a voter to a
choice: counts per poll only.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import struct
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from privpoll.bus import naming

VOTE_TABLES = ("actors", "ballots")
LP_NORMAL = 1
HEAP_XMAX_INVALID = 0x0800
# A heap tuple's header is 23 bytes, padded to 24: the first column (the poll's uuid) follows.
TUPLE_HEADER = 24
# An envelope as the ingest writes it, and the subject prefix of a voters bucket's keys.
ENVELOPE_MARK = b'"actor":{"entry":"'


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PollFiles(_Model):
    """What the files give back of one poll. ``old`` rows are versions that are not the
    poll's live rows now: the batches before the re-mix, or rows deleted since."""

    name: str
    uid: str
    live_rows: int = 0
    old_heap_versions: int = 0
    old_free_space_tuples: int = 0
    old_transactions_in_heap: int = 0
    old_index_entries: int = 0
    old_wal_rows: int = 0
    wal_rows: int = 0
    stream: bool = False
    voters_bucket: bool = False
    readable_envelopes: int = 0
    readable_voter_keys: int = 0

    @property
    def clean(self) -> bool:
        """Nothing of the poll beyond its live rows."""
        return not (
            self.old_heap_versions
            or self.old_free_space_tuples
            or self.old_index_entries
            or self.old_wal_rows
            or self.stream
            or self.voters_bucket
            or self.readable_envelopes
            or self.readable_voter_keys
        )


class FilesReport(_Model):
    folder: str
    polls: list[PollFiles]
    wal_vote_transactions: int = 0
    wal_commit_times: int = 0
    readable_envelopes: int = 0
    notes: list[str] = []


@dataclass
class Catalog:
    polls: dict[uuid.UUID, str]
    heaps: dict[str, list[Path]]
    indexes: dict[str, list[Path]]
    relfilenodes: dict[str, str]
    block: int = 8192


@dataclass
class Found:
    live: dict[uuid.UUID, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    live_xmins: dict[uuid.UUID, set[int]] = field(default_factory=lambda: defaultdict(set))
    versions: dict[uuid.UUID, list[tuple[int, bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    remnants: dict[uuid.UUID, list[tuple[int, bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )


def copy_running(source: Path, target: Path) -> Path:
    """What a thief copies from a running machine: files vanish and grow while it copies
    (a file gone meanwhile, or a socket, is skipped)."""

    def tolerant(src: str, dst: str) -> None:
        with contextlib.suppress(OSError):
            shutil.copy2(src, dst)

    shutil.copytree(
        source,
        target,
        copy_function=tolerant,
        ignore=shutil.ignore_patterns(".s.PGSQL.*"),
        ignore_dangling_symlinks=True,
    )
    return target


def cluster_of(folder: Path) -> Path:
    return folder / "postgres" / "cluster"


def _segments(path: Path) -> list[Path]:
    return [path, *sorted(path.parent.glob(f"{path.name}.[0-9]*"))] if path.exists() else []


def read_catalog(conn: psycopg.Connection[Any], cluster: Path) -> Catalog:
    """Poll uids and the vote tables' file names in ``cluster``, read through ``conn``: a
    connection to a throwaway server started on a second copy of it."""
    polls: dict[uuid.UUID, str] = {}
    with contextlib.suppress(psycopg.errors.UndefinedTable):
        polls = {row[1]: str(row[0]) for row in conn.execute("SELECT name, uid FROM polls")}
    heaps: dict[str, list[Path]] = {}
    indexes: dict[str, list[Path]] = {}
    nodes: dict[str, str] = {}
    for table in VOTE_TABLES:
        found = conn.execute(
            "SELECT pg_relation_filepath(c.oid), c.relfilenode::text, "
            "pg_relation_filepath(i.indexrelid) FROM pg_class c "
            "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
            "WHERE c.oid = to_regclass(%s)",
            (table,),
        ).fetchone()
        if found is None or found[0] is None:
            continue
        heaps[table] = _segments(cluster / str(found[0]))
        nodes[table] = str(found[1])
        if found[2]:
            indexes[table] = _segments(cluster / str(found[2]))
    size = conn.execute("SELECT current_setting('block_size')::int").fetchone()
    return Catalog(polls, heaps, indexes, nodes, int(size[0]) if size else 8192)


def _pages(files: list[Path], block: int) -> Iterator[bytes]:
    for path in files:
        data = path.read_bytes()
        for start in range(0, len(data) - block + 1, block):
            yield data[start : start + block]


def scan_heap(files: list[Path], block: int, polls: set[uuid.UUID], found: Found) -> None:
    """Every tuple by line pointer, and every tuple-shaped remnant in the rest of the page."""
    marks = {uid.bytes: uid for uid in polls}
    for page in _pages(files, block):
        lower, _upper, special = struct.unpack_from("<HHH", page, 12)
        if lower == 0 or lower > block or special > block:
            continue
        covered: list[tuple[int, int]] = []
        for pointer in range(24, lower, 4):
            word = struct.unpack_from("<I", page, pointer)[0]
            offset, flags, length = word & 0x7FFF, (word >> 15) & 0x3, word >> 17
            if flags != LP_NORMAL or length < TUPLE_HEADER + 32 or offset + length > block:
                continue
            covered.append((offset, offset + length))
            xmin, xmax = struct.unpack_from("<II", page, offset)
            infomask = struct.unpack_from("<H", page, offset + 20)[0]
            hoff = page[offset + 22]
            poll = marks.get(page[offset + hoff : offset + hoff + 16])
            if poll is None:
                continue
            key = page[offset + hoff + 16 : offset + hoff + 32]
            if xmax != 0 and not infomask & HEAP_XMAX_INVALID:
                found.versions[poll].append((xmin, key))
            else:
                found.live[poll].add(key)
                found.live_xmins[poll].add(xmin)
        # Bytes no live line pointer covers: free space and the tuples VACUUM let go of.
        for mark, poll in marks.items():
            for at in _occurrences(page, mark):
                start = at - TUPLE_HEADER
                if start < 0 or any(a <= start < b for a, b in covered):
                    continue
                xmin = struct.unpack_from("<I", page, start)[0]
                found.remnants[poll].append((xmin, page[at + 16 : at + 32]))


def _occurrences(data: bytes, mark: bytes) -> Iterator[int]:
    at = data.find(mark)
    while at != -1:
        yield at
        at = data.find(mark, at + 1)


def _random_id(key: bytes) -> bool:
    """Whether 16 bytes have the shape of a uuid4, as every row id of the vote tables has
    (the poll's own row in ``polls`` has its uuid followed by other bytes)."""
    return len(key) == 16 and key[6] >> 4 == 4 and key[8] >> 6 == 0b10


def keys_in(files: list[Path], polls: set[uuid.UUID]) -> dict[uuid.UUID, set[bytes]]:
    """(poll, id) pairs anywhere in ``files``: the poll's uuid followed by a row id."""
    found: dict[uuid.UUID, set[bytes]] = defaultdict(set)
    for path in files:
        data = path.read_bytes()
        for uid in polls:
            for at in _occurrences(data, uid.bytes):
                key = data[at + 16 : at + 32]
                if _random_id(key):
                    found[uid].add(key)
    return found


_WALDUMP_TX = re.compile(r"tx:\s+(\d+),.*?desc: (\w+)(.*)$")


def waldump(binary: Path, wal: Path, nodes: set[str]) -> tuple[int, int]:
    """(transactions that wrote a vote table, of them the ones whose commit time is there),
    as ``binary`` (the bundled pg_waldump) reads the segments."""
    segments = sorted(p.name for p in wal.glob("[0-9A-F]" * 24))
    if not segments:
        return 0, 0
    done = subprocess.run(
        [str(binary), "--path", str(wal), segments[0], segments[-1]],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    writers: set[str] = set()
    committed: set[str] = set()
    for line in done.stdout.splitlines():
        match = _WALDUMP_TX.search(line)
        if match is None:
            continue
        tx, what, rest = match.groups()
        if line.startswith("rmgr: Heap") and any(f"/{node} " in rest + " " for node in nodes):
            writers.add(tx)
        elif what == "COMMIT":
            committed.add(tx)
    return len(writers), len(writers & committed)


def scan_store(store: Path, name: str) -> tuple[bool, bool, int, int]:
    """(stream there, voters bucket there, readable envelopes, readable voter keys)."""
    streams = [p for p in store.rglob("streams") if p.is_dir()]
    stream = any((s / naming.stream(name)).exists() for s in streams)
    bucket_stream = naming.bucket_stream(naming.voters_bucket(name))
    bucket = any((s / bucket_stream).exists() for s in streams)
    envelopes = keys = 0
    prefix = f"$KV.{naming.voters_bucket(name)}.".encode()
    for stream_dir in [s / naming.stream(name) for s in streams] + [
        s / bucket_stream for s in streams
    ]:
        for path in stream_dir.rglob("*.blk") if stream_dir.exists() else []:
            data = path.read_bytes()
            envelopes += data.count(ENVELOPE_MARK)
            keys += data.count(prefix)
    return stream, bucket, envelopes, keys


def audit(folder: Path, catalog: Catalog, waldump_binary: Path) -> FilesReport:
    """What a copy of a ``privpoll up`` data folder gives back, per poll."""
    cluster = cluster_of(folder)
    notes: list[str] = []
    uids = set(catalog.polls)
    found = Found()
    for table in VOTE_TABLES:
        scan_heap(catalog.heaps.get(table, []), catalog.block, uids, found)
    in_index = keys_in([p for files in catalog.indexes.values() for p in files], uids)
    wal = cluster / "pg_wal"
    in_wal = keys_in(sorted(wal.glob("[0-9A-F]" * 24)), uids)
    writers, timed = waldump(waldump_binary, wal, set(catalog.relfilenodes.values()))
    store = folder / "nats" / "jetstream"
    polls: list[PollFiles] = []
    all_envelopes = 0
    for uid, name in sorted(catalog.polls.items(), key=lambda item: item[1]):
        live = found.live[uid]
        live_xmins = found.live_xmins[uid]
        old_versions = [(x, k) for x, k in found.versions[uid] if k not in live]
        remnants = [(x, k) for x, k in found.remnants[uid] if k not in live]
        old_xmins = {x for x, _ in old_versions + remnants} - live_xmins
        stream, bucket, envelopes, keys = (
            scan_store(store, name) if store.exists() else (False, False, 0, 0)
        )
        all_envelopes += envelopes
        polls.append(
            PollFiles(
                name=name,
                uid=str(uid),
                live_rows=len(live),
                old_heap_versions=len(old_versions),
                old_free_space_tuples=len(remnants),
                old_transactions_in_heap=len(old_xmins),
                old_index_entries=len(in_index[uid] - live),
                old_wal_rows=len(in_wal[uid] - live),
                wal_rows=len(in_wal[uid]),
                stream=stream,
                voters_bucket=bucket,
                readable_envelopes=envelopes,
                readable_voter_keys=keys,
            )
        )
    if not store.exists():
        notes.append("no NATS store in this folder (an external NATS was used)")
    notes.append(
        "not checked: backups, disk snapshots and the free blocks of the file system "
        "(unlinked files are not overwritten); replicas that streamed the WAL"
    )
    return FilesReport(
        folder=str(folder),
        polls=polls,
        wal_vote_transactions=writers,
        wal_commit_times=timed,
        readable_envelopes=all_envelopes,
        notes=notes,
    )


def describe(report: FilesReport) -> list[str]:
    lines = [f"files of {report.folder}:"]
    lines.append(
        f"  WAL: {report.wal_vote_transactions} transactions wrote the vote tables, "
        f"{report.wal_commit_times} of them with their commit time"
    )
    for poll in report.polls:
        verdict = "nothing beyond its live rows" if poll.clean else "RECOVERED:"
        lines.append(f"  poll {poll.name}: {poll.live_rows} live rows; {verdict}")
        if poll.clean:
            continue
        found: dict[str, Any] = {
            "old row versions in the heap": poll.old_heap_versions,
            "old tuples in free space": poll.old_free_space_tuples,
            "old transactions (xmin) in the heap": poll.old_transactions_in_heap,
            "old index entries": poll.old_index_entries,
            "rows in the WAL that are not live rows of the heap": poll.old_wal_rows,
            "readable envelopes in the queue": poll.readable_envelopes,
            "readable voter keys in the queue": poll.readable_voter_keys,
        }
        for what, count in found.items():
            if count:
                lines.append(f"    {count} {what}")
        if poll.stream or poll.voters_bucket:
            kept = [w for w, on in (("stream", poll.stream), ("bucket", poll.voters_bucket)) if on]
            lines.append(f"    its {' and '.join(kept)} still exist")
    lines += [f"  note: {note}" for note in report.notes]
    return lines
