"""The poll registry (a KV bucket) as one process sees it, kept current at a fixed cost.

The ingest and the sinks read a poll's registry entry on every vote or batch. Reading each
poll's entry every second costs NATS and the process a request per poll per second (and
nats-py's ``key_value`` adds a stream-info request to each), which a process serving a
hundred polls pays a hundred times over. Instead, one stream-info request per ``every``
seconds says whether anything in the bucket changed (its last sequence moved); only then is a
cached poll read again, the next time it is asked for (a process that saw a thousand polls
pays nothing for the ones nobody asks about).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from privpoll.bus import naming, topology
from privpoll.core.poll import Poll

# Which state of the bucket an entry was read in: its stream's creation time (a bucket made
# again starts its sequence again) and last sequence.
Version = tuple[str, int]
UNKNOWN: Version = ("", -1)


@dataclass(frozen=True)
class Entry:
    poll: Poll | None
    # The bucket's version when the entry was read; None: written by this process, and so
    # current without a read until ``every`` seconds passed.
    version: Version | None
    read_at: float


class Registry:
    def __init__(self, js: JetStreamContext, every: float = 1.0) -> None:
        self.js = js
        self.every = every
        self._bucket: KeyValue | None = None
        self._entries: dict[str, Entry] = {}
        self._names: tuple[Version, list[str]] | None = None
        self._version = UNKNOWN
        self._checked_at = float("-inf")
        # The version before the last change, and when it was last seen current: an entry
        # of that version was current until then.
        self._previous: tuple[Version, float] = (UNKNOWN, float("-inf"))
        self._checking: asyncio.Task[Version] | None = None

    async def get(self, name: str, *, fresh: bool = False) -> Poll | None:
        """The poll named ``name`` (None: there is none); ``fresh`` reads the bucket now."""
        version = await self.version()
        entry = self._entries.get(name)
        if not fresh and entry is not None and self._current(entry, version):
            return entry.poll
        return await self._read(name, version)

    def peek(self, name: str) -> tuple[Poll | None, float] | None:
        """Without waiting (from any thread): the cached poll and how many seconds ago it was
        last known current; None if it was never read."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry.version == self._version:
            known = self._checked_at
        elif entry.version == self._previous[0]:
            known = self._previous[1]
        else:
            known = entry.read_at
        return entry.poll, time.monotonic() - max(known, entry.read_at)

    def remember(self, poll: Poll) -> None:
        """A poll this process just wrote to the registry."""
        self._entries[poll.name] = Entry(poll, None, time.monotonic())

    async def names(self) -> list[str]:
        """Every registered poll's name, listed again only when the bucket changed."""
        version = await self.version()
        if self._names is not None and self._names[0] == version:
            return self._names[1]
        try:
            found = await topology.live_keys(self.js, naming.REGISTRY_BUCKET, await self._kv())
        except NotFoundError:
            found = []
        self._names = (version, found)
        return found

    async def version(self) -> Version:
        """The bucket's version, checked at most every ``every`` seconds (one request in
        flight at a time, whoever asks)."""
        if time.monotonic() - self._checked_at < self.every:
            return self._version
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self._check())
            # Its error reaches whoever awaits it; retrieved here too, in case none still does.
            self._checking.add_done_callback(lambda task: task.cancelled() or task.exception())
        return await asyncio.shield(self._checking)

    def _current(self, entry: Entry, version: Version) -> bool:
        if entry.version is None:
            return time.monotonic() - entry.read_at < self.every
        return entry.version == version

    async def _check(self) -> Version:
        asked = time.monotonic()
        try:
            info = await self.js.stream_info(naming.registry_stream())
        except NotFoundError:
            # No poll was ever made: the first reader makes the bucket, as its first writer
            # would.
            self._bucket = None
            await self._kv()
            info = await self.js.stream_info(naming.registry_stream())
        # Whatever failed, the bucket handle may be stale (a NATS that lost its data): it is
        # looked up again next time, and the caller sees the error.
        except Exception:
            self._bucket = None
            raise
        found = (str(info.created), int(info.state.last_seq))
        if found != self._version:
            self._previous = (self._version, self._checked_at)
            self._version = found
            # Names that had no poll are not kept past a change: made-up names do not pile up.
            for name, entry in list(self._entries.items()):
                if entry.poll is None:
                    del self._entries[name]
        self._checked_at = asked
        return found

    async def _read(self, name: str, version: Version) -> Poll | None:
        read_at = time.monotonic()
        try:
            found = await topology.read_poll(await self._kv(), name)
        # Whatever failed, the bucket handle may be stale: looked up again next time.
        except Exception:
            self._bucket = None
            raise
        current = self._entries.get(name)
        # A write of this process newer than this read stays: the read may predate it.
        if current is None or current.version is not None or current.read_at <= read_at:
            self._entries[name] = Entry(found, version, read_at)
        return found

    async def _kv(self) -> KeyValue:
        if self._bucket is None:
            self._bucket = await topology.registry_bucket(self.js)
        return self._bucket
