"""The life of a poll, written once: create, provision, close (by hand or at closesAt), drain,
re-mix, purge, delete.

Three control planes drive it and share every step: the HTTP API (``privpoll up``), the
re-mixer worker, and the Kubernetes operator. Each step is idempotent, so a caller that died
half-way simply runs it again. docs/design.md ("A poll's life") draws the states.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from privpoll.bus import topology
from privpoll.bus.topology import Drain, JetStream
from privpoll.core import randomness
from privpoll.core.poll import Phase, Poll
from privpoll.core.spec import PollSpec
from privpoll.db import migrations, storage
from privpoll.db import remix as rewriting
from privpoll.db.remix import Remixed


def new_poll(name: str, spec: PollSpec) -> Poll:
    """A poll not stored yet, with the random uid that every key of it derives from."""
    return Poll(
        name=name, uid=randomness.new_id(), rules=spec.rules(), eligible=len(spec.voters.listed)
    )


def record(conn: psycopg.Connection[Any], poll: Poll, spec: PollSpec) -> Poll:
    """The schema and the poll's row: the stored poll (the first poll of a name keeps it)."""
    migrations.migrate(conn)
    return storage.insert_poll(conn, poll, spec)


class Refused(Exception):
    """A spec that cannot apply to the stored poll; ``reason`` is a short CamelCase word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def unsafe_change(old: Poll, new: PollSpec, old_voters: list[str], votes: int) -> str | None:
    """Why ``new`` may not replace the spec of ``old`` now, or None. Before the first vote
    anything goes; after it, nothing that would make the estimates or the turnout wrong."""
    if votes == 0:
        return None
    rules = new.rules()
    if rules.choices != old.rules.choices:
        return "choices cannot change after the first vote"
    if rules.noise != old.rules.noise:
        return "noise cannot change after the first vote (the estimates would be wrong)"
    if rules.duplicates != old.rules.duplicates:
        return "duplicates cannot change after the first vote"
    removed = set(old_voters) - set(new.voters.listed)
    if removed:
        return f"{len(removed)} voters cannot be removed after the first vote; only add voters"
    return None


async def apply(
    js: JetStream, conn: psycopg.Connection[Any], name: str, spec: PollSpec, *, owner: str | None
) -> Poll:
    """The stored poll ``name`` with ``spec``: recorded if new, changed if the change is safe.
    ``owner`` is the uid of the poll the caller made before (None: it made none yet); a poll
    of that name with another uid is someone else's. Refused says why not."""
    await asyncio.to_thread(migrations.migrate, conn)
    existing = await asyncio.to_thread(storage.get_poll, conn, name)
    if existing is None:
        return await asyncio.to_thread(record, conn, new_poll(name, spec), spec)
    if owner and str(existing.uid) != owner:
        raise Refused("NameTaken", f"a poll named {name!r} exists already (another namespace?)")
    # Votes count from the moment they are queued, not when the sinks store them.
    stored_votes = (await asyncio.to_thread(storage.tally, conn, existing.uid))[0]
    votes = max(stored_votes, await topology.envelopes_published(js, name))
    old_voters = await asyncio.to_thread(storage.voter_ids, conn, name)
    refused = unsafe_change(existing, spec, old_voters, votes)
    if refused:
        raise Refused("UnsafeChange", refused)
    changed = old_voters != spec.voters.listed
    updated = await asyncio.to_thread(
        functools.partial(storage.update_spec, voters_changed=changed), conn, name, spec
    )
    if updated is None:  # deleted meanwhile: the next reconcile records it anew
        raise Refused("Gone", f"the poll {name!r} was deleted while it was being changed")
    return updated


async def provision(
    js: JetStream, conn: psycopg.Connection[Any], poll: Poll, spec: PollSpec, *, replicas: int
) -> Poll:
    """The row, then the queue: stream, both consumers, voters bucket and registry entry."""
    stored = await asyncio.to_thread(record, conn, poll, spec)
    await reprovision(js, conn, stored, replicas=replicas)
    return stored


async def reprovision(
    js: JetStream, conn: psycopg.Connection[Any], poll: Poll, *, replicas: int
) -> None:
    """The poll's queue as it should be: all of it; once the poll is re-mixed its registry
    entry alone (the stream is drained for good, and the purge deletes it and the voters
    bucket); once it is purged nothing (a vote finds no entry, asks the database and reads
    "closed"), and whatever a close racing the purge put back is removed again. Re-mixed, not
    purged: so that a close or a reconcile racing the purge does not recreate the stream."""
    remixed, purged = await _progress(conn, poll.name)
    if purged:
        await topology.remove_queue(js, poll.name)
    elif remixed:
        await topology.register(js, poll, replicas=replicas)
    else:
        await topology.provision_queue(js, poll, replicas=replicas)


async def _progress(conn: psycopg.Connection[Any], name: str) -> tuple[bool, bool]:
    """Whether the poll is re-mixed, and purged."""
    return await asyncio.to_thread(rewriting.progress_of, conn, name)


async def close(
    js: JetStream, conn: psycopg.Connection[Any], name: str, *, replicas: int
) -> Poll | None:
    """Close a poll: the row, the registry, and the stream stops taking envelopes at once."""
    closed = await asyncio.to_thread(storage.close_poll, conn, name)
    if closed is not None:
        # The registry first: a vote that finds the stream gone looks the poll up there, and
        # must then read "closed" (410), not an open poll without a stream (503). A purged
        # poll has no entry any more, and gets none back.
        if not (await _progress(conn, name))[1]:
            await topology.register(js, closed, replicas=replicas)
        await reprovision(js, conn, closed, replicas=replicas)
    return closed


async def close_if_due(
    js: JetStream, conn: psycopg.Connection[Any], poll: Poll, *, replicas: int
) -> Poll:
    """A poll whose closesAt has passed stops taking votes, as an explicit close does."""
    if poll.phase() is Phase.CLOSED and not poll.closed:
        return await close(js, conn, poll.name, replicas=replicas) or poll
    return poll


class NotReady(Exception):
    """The poll cannot be re-mixed yet; the message says why and what to do."""

    def __init__(self, code: str, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retry = retry


def refusal(poll: Poll, drain: Drain) -> NotReady | None:
    """Why the rows of ``poll`` must not be rewritten now, if they must not."""
    if poll.phase() is not Phase.CLOSED:
        return NotReady(
            "poll_open",
            f"poll {poll.name} is open: close it first, the re-mixer runs once no vote can come",
            retry=False,
        )
    if not drain.done:
        return NotReady(
            "not_drained",
            f"the sinks have not yet stored every vote of poll {poll.name} "
            f"({drain.held} envelopes left); try again in a few seconds",
            retry=True,
        )
    return None


async def remix(
    js: JetStream,
    conn: psycopg.Connection[Any],
    poll: Poll,
    *,
    replicas: int,
    purge_now: bool = True,
) -> Remixed:
    """Re-mix a closed poll now, once the sinks drained it; NotReady says why not. Then the
    purge, unless the caller purges once for many polls (``purge_now`` False: ``purge``).

    ``conn`` must be in autocommit mode: the purge's VACUUM runs outside any transaction.
    """
    poll = await close_if_due(js, conn, poll, replicas=replicas)
    refused = refusal(poll, await topology.drain(js, poll.name))
    if refused is not None:
        raise refused
    done = await asyncio.to_thread(
        functools.partial(rewriting.remix, purge_now=purge_now), conn, poll
    )
    if done.purge not in ("pending", "later"):
        await finish_purges(js, conn)
    return done


async def purge(js: JetStream, conn: psycopg.Connection[Any]) -> bool:
    """One purge for every poll re-mixed and not yet purged; whether it held."""
    if await asyncio.to_thread(rewriting.purge, conn) == "pending":
        return False
    await finish_purges(js, conn)
    return True


def _when(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    # The session's time zone is the database's choice: always say UTC.
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Progress:
    """How far a closed poll is: re-mixed (rows rewritten), purged (old versions gone from
    the database's files, the stream and voters bucket deleted), and when."""

    remixed: bool
    purged: bool
    message: str | None = None
    remixed_at: datetime | None = None
    purged_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "remixed": self.remixed,
            "purged": self.purged,
            "remixedAt": _when(self.remixed_at),
            "purgedAt": _when(self.purged_at),
        }
        if self.message:
            found["message"] = self.message
        return found


def history(conn: psycopg.Connection[Any], name: str) -> dict[str, str | None]:
    """``remixedAt`` and ``purgedAt`` of a poll (null until then), as the API says them."""
    remixed_at, purged_at = rewriting.times(conn, name)
    return {"remixedAt": _when(remixed_at), "purgedAt": _when(purged_at)}


async def advance(
    js: JetStream,
    conn: psycopg.Connection[Any],
    poll: Poll,
    *,
    replicas: int,
    purge_now: bool = True,
) -> Progress | None:
    """The after-close step, run again and again: None while the poll is open; then the
    re-mix once the sinks drained it; then the purge of old row versions (from the files
    and the WAL too) until it holds, and with it the poll's stream and voters bucket.
    ``purge_now`` False: the caller runs ``purge`` once after advancing many polls (a
    purge rewrites the vote tables whole, so a thousand polls closing together would pay
    for a thousand)."""
    if poll.phase() is not Phase.CLOSED:
        return None
    remixed, purged = (await asyncio.to_thread(rewriting.progress, conn)).get(
        poll.name, (False, False)
    )
    message = None
    if not remixed:
        try:
            done = await remix(js, conn, poll, replicas=replicas, purge_now=purge_now)
            message = done.describe()
        except NotReady:
            return Progress(remixed=False, purged=False)
    elif not purged and purge_now:
        await purge(js, conn)
    remixed, purged = (await asyncio.to_thread(rewriting.progress, conn)).get(
        poll.name, (remixed, False)
    )
    remixed_at, purged_at = await asyncio.to_thread(rewriting.times, conn, poll.name)
    return Progress(remixed, purged, message, remixed_at, purged_at)


async def finish_purges(js: JetStream, conn: psycopg.Connection[Any]) -> None:
    """Once the database forgot the old row versions (``rewriting.purge``): every re-mixed
    poll whose history no read reaches any more loses its stream, voters bucket and registry
    entry (NATS keeps nothing of it), and only then is marked purged."""
    known = {poll.name: poll for poll in await asyncio.to_thread(storage.list_polls, conn)}
    for name, (remixed, purged) in (await asyncio.to_thread(rewriting.progress, conn)).items():
        poll = known.get(name) if remixed else None
        if poll is None or purged:
            continue
        if not await asyncio.to_thread(rewriting.history_gone, conn, poll.uid):
            continue
        await topology.remove_queue(js, name)
        await asyncio.to_thread(rewriting.mark_purged, conn, poll.uid)


async def delete(
    js: JetStream, conn: psycopg.Connection[Any] | None, name: str, uid: str | None = None
) -> tuple[int, int] | None:
    """The poll's stream, voters bucket and registry entry first (no vote can arrive after),
    then with ``conn`` its rows: only those of the poll whose uid is ``uid``, when given (a
    new poll may have the name). The vote and ballot rows erased; None if no such poll."""
    await topology.remove_queue(js, name)
    if conn is None:
        return None
    poll = await asyncio.to_thread(storage.get_poll, conn, name)
    if poll is None or (uid is not None and str(poll.uid) != uid):
        return None
    counted = await asyncio.to_thread(storage.row_counts, conn, poll.uid)
    await asyncio.to_thread(storage.delete_poll, conn, poll)
    return counted
