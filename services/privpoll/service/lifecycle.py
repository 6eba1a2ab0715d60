"""The life of a poll, written once: create, provision, close (by hand or at closesAt), drain,
re-mix, purge, delete.

Three control planes drive it and share every step: the HTTP API (``privpoll up``), the
re-mixer worker, and the Kubernetes operator. Each step is idempotent, so a caller that died
half-way simply runs it again. docs/design.md ("A poll's life") draws the states.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import psycopg

from privpoll.bus import topology
from privpoll.bus.topology import Drain, JetStream
from privpoll.core import randomness
from privpoll.core.poll import Phase, Poll
from privpoll.core.spec import PollSpec
from privpoll.db import remix as rewriting
from privpoll.db import storage
from privpoll.db.remix import Remixed


def new_poll(name: str, spec: PollSpec) -> Poll:
    """A poll not stored yet, with the random uid that every key of it derives from."""
    return Poll(
        name=name, uid=randomness.new_id(), rules=spec.rules(), eligible=len(spec.voters.listed)
    )


def record(conn: psycopg.Connection[Any], poll: Poll, spec: PollSpec) -> Poll:
    """The schema and the poll's row: the stored poll (the first poll of a name keeps it)."""
    storage.migrate(conn)
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
    await asyncio.to_thread(storage.migrate, conn)
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
    updated = await asyncio.to_thread(storage.update_spec, conn, name, spec)
    if updated is None:  # deleted meanwhile: the next reconcile records it anew
        raise Refused("Gone", f"the poll {name!r} was deleted while it was being changed")
    return updated


async def provision(
    js: JetStream, conn: psycopg.Connection[Any], poll: Poll, spec: PollSpec, *, replicas: int
) -> Poll:
    """The row, then the queue: stream, both consumers, voters bucket and registry entry."""
    stored = await asyncio.to_thread(record, conn, poll, spec)
    await topology.provision_queue(js, stored, replicas=replicas)
    return stored


async def close(
    js: JetStream, conn: psycopg.Connection[Any], name: str, *, replicas: int
) -> Poll | None:
    """Close a poll: the row, the registry, and the stream stops taking envelopes at once."""
    closed = await asyncio.to_thread(storage.close_poll, conn, name)
    if closed is not None:
        # The registry first: a vote that finds the stream gone looks the poll up there, and
        # must then read "closed" (410), not an open poll without a stream (503).
        await (await topology.registry_bucket(js, replicas=replicas)).put(
            name, closed.to_registry()
        )
        await topology.provision_queue(js, closed, replicas=replicas)
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
    js: JetStream, conn: psycopg.Connection[Any], poll: Poll, *, replicas: int
) -> Remixed:
    """Re-mix a closed poll now, once the sinks drained it; NotReady says why not.

    ``conn`` must be in autocommit mode: the purge's VACUUM runs outside any transaction.
    """
    poll = await close_if_due(js, conn, poll, replicas=replicas)
    refused = refusal(poll, await topology.drain(js, poll.name))
    if refused is not None:
        raise refused
    return await asyncio.to_thread(rewriting.remix, conn, poll)


@dataclass(frozen=True)
class Progress:
    """How far a closed poll is: re-mixed (rows rewritten), purged (old versions gone)."""

    remixed: bool
    purged: bool
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"remixed": self.remixed, "purged": self.purged}
        if self.message:
            found["message"] = self.message
        return found


async def advance(
    js: JetStream, conn: psycopg.Connection[Any], poll: Poll, *, replicas: int
) -> Progress | None:
    """The after-close step, run again and again: None while the poll is open; then the
    re-mix once the sinks drained it; then the purge of old row versions until it holds."""
    if poll.phase() is not Phase.CLOSED:
        return None
    remixed, purged = (await asyncio.to_thread(rewriting.progress, conn)).get(
        poll.name, (False, False)
    )
    if not remixed:
        try:
            done = await remix(js, conn, poll, replicas=replicas)
        except NotReady:
            return Progress(remixed=False, purged=False)
        return Progress(remixed=True, purged=done.purge != "pending", message=done.describe())
    if not purged:
        purged = await asyncio.to_thread(purge_remixed, conn)
    return Progress(remixed=True, purged=purged)


def purge_remixed(conn: psycopg.Connection[Any]) -> bool:
    """Vacuum the vote tables; once no old version is left, every re-mixed poll is purged."""
    if rewriting.purge(conn) == "pending":
        return False
    for name, (remixed, purged) in rewriting.progress(conn).items():
        poll = storage.get_poll(conn, name) if remixed and not purged else None
        if poll is not None:
            rewriting.mark_purged(conn, poll.uid)
    return True


async def delete(
    js: JetStream, conn: psycopg.Connection[Any] | None, name: str, uid: str | None = None
) -> None:
    """The poll's stream, voters bucket and registry entry; with ``conn``, its rows as well
    (only those of the poll whose uid is ``uid``, when given: a new poll may have the name)."""
    await topology.remove_queue(js, name)
    if conn is None:
        return
    poll = await asyncio.to_thread(storage.get_poll, conn, name)
    if poll is not None and (uid is None or str(poll.uid) == uid):
        await asyncio.to_thread(storage.delete_poll, conn, poll)
