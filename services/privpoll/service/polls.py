"""What the HTTP API and the web pages do with polls: one implementation behind both.

Each function runs inside a request of the ingest and raises ``ApiError`` with the status,
code and message both edges show (as JSON or as a page).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from pydantic import ValidationError

from privpoll import cluster
from privpoll.bus.ballot_box import AlreadyVoted, PollClosed, QueueDown
from privpoll.bus.topology import JetStream
from privpoll.core import tokens
from privpoll.core.poll import Phase, Poll
from privpoll.core.results import summarize
from privpoll.core.spec import NAME_PATTERN, NewPoll, describe, problems
from privpoll.db import storage
from privpoll.db.remix import Remixed
from privpoll.service import lifecycle
from privpoll.service.errors import (
    RETRY_AFTER,
    ApiError,
    database_down,
    queue_down,
    unavailable,
)
from privpoll.service.queued import pending_votes
from privpoll.service.services import Services

PROVISION_WAIT = 30.0
T = TypeVar("T")
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Invitation:
    voter: str
    token: str
    url: str


def not_found(name: str) -> ApiError:
    return ApiError(404, "poll_not_found", f"there is no poll named {name!r}")


def check_name(name: str) -> None:
    """No poll has a name that a poll could not be created with: 404 before any lookup."""
    if not _NAME.fullmatch(name):
        raise not_found(name)


def stored_poll(svc: Services, name: str) -> Poll:
    check_name(name)
    with svc.pool.connection() as conn:
        poll = storage.get_poll(conn, name)
    if poll is None:
        raise not_found(name)
    return poll


def all_polls(svc: Services) -> list[Poll]:
    with svc.pool.connection() as conn:
        return storage.list_polls(conn)


def parse_new_poll(body: Any, *, strict: bool = False, voters: list[str] | None = None) -> NewPoll:
    """The poll a body describes. ``strict``: JSON types exactly as the OpenAPI document says
    (``"10"`` is not a number), for the API; the pages' form sends every field as text.
    ``voters``: the ids of an uploaded voter file, for a body whose spec has no voters."""
    kind = body.get("kind") if isinstance(body, dict) else None
    if kind is not None and kind != "Poll":
        raise ApiError(400, "not_a_poll", f"this is not a Poll (kind: {kind})")
    try:
        if voters is not None:
            return _with_voter_file(body, voters)
        if strict:
            return NewPoll.model_validate_json(json.dumps(body), strict=True)
        return NewPoll.model_validate(body)
    except ValidationError as error:
        found = problems(error)
        raise ApiError(
            400, "invalid_poll", describe(found), fields=[p.model_dump() for p in found]
        ) from error


def _with_voter_file(body: dict[str, Any], voters: list[str]) -> NewPoll:
    """Everything but the voters checked strictly through JSON, as any API body; the ids (text
    already, up to a million) checked once as they are: through JSON they would be held twice
    more, as JSON text and as new strings (a worker's peak memory, issue 27)."""
    stand_in = {**body, "spec": {**body["spec"], "voters": {"ids": ["stand-in"]}}}
    checked = NewPoll.model_validate_json(json.dumps(stand_in), strict=True)
    spec = checked.spec.model_dump(exclude={"voters"})
    return NewPoll.model_validate(
        {"name": checked.name, "spec": {**spec, "voters": {"ids": voters}}}
    )


def _on_queue(svc: Services, work: Callable[[JetStream], Awaitable[T]]) -> T:
    """Run a step of the poll's life on this worker's NATS loop (which holds its connection);
    a poll it returns is what this worker's registry cache holds from then on."""

    async def step() -> T:
        done = await work(await svc.box.jetstream())
        if isinstance(done, Poll):
            svc.box.remember(done)
        return done

    return svc.box.call(step())


def create_poll(svc: Services, new: NewPoll) -> Poll:
    if svc.settings.control_plane == "kubernetes":
        return _create_on_cluster(svc, new)
    poll = lifecycle.new_poll(new.name, new.spec)
    replicas = svc.settings.stream_replicas
    try:
        with svc.pool.connection() as conn:
            stored = _on_queue(
                svc, lambda js: lifecycle.provision(js, conn, poll, new.spec, replicas=replicas)
            )
    except QueueDown as error:
        raise queue_down() from error
    if stored.uid != poll.uid:
        raise ApiError(409, "poll_exists", f"a poll named {new.name!r} exists already")
    return stored


# What of a Poll resource's 1.5 MB (etcd's request limit) its voter list may take.
CLUSTER_VOTERS_BYTES = 1 << 20


def _create_on_cluster(svc: Services, new: NewPoll) -> Poll:
    """Create the Poll resource and wait for the operator to provision it."""
    listed = sum(len(voter) + 3 for voter in new.spec.voters.ids or [])
    if listed > CLUSTER_VOTERS_BYTES:
        raise ApiError(
            413,
            "too_large",
            f"on Kubernetes a Poll holds at most about {CLUSTER_VOTERS_BYTES:,} bytes of voter "
            f"ids, and these are {listed:,}: put them in ConfigMaps of one id a line and "
            "name them in spec.voters.configMapRefs (kubectl apply the Poll)",
        )
    try:
        created = cluster.create_resource(svc.settings.namespace, new)
    # The Kubernetes client raises its own, urllib3's and the socket's errors alike.
    except Exception as error:
        raise unavailable(
            "kubernetes_unavailable",
            "the Kubernetes API did not take the Poll; try again in a few seconds",
        ) from error
    if not created:
        raise ApiError(409, "poll_exists", f"a poll named {new.name!r} exists already")
    deadline = time.monotonic() + PROVISION_WAIT
    while time.monotonic() < deadline:
        try:
            found = svc.box.call(svc.box.poll(new.name, fresh=True))
        except QueueDown:
            found = None
        if found is not None:
            return found
        time.sleep(0.25)
    raise unavailable(
        "provisioning",
        f"the Poll {new.name!r} was created; the operator has not provisioned it yet "
        f"(kubectl get poll {new.name} shows why)",
    )


def close_poll(svc: Services, name: str) -> Poll:
    stored_poll(svc, name)
    replicas = svc.settings.stream_replicas
    try:
        with svc.pool.connection() as conn:
            closed = _on_queue(svc, lambda js: lifecycle.close(js, conn, name, replicas=replicas))
    except QueueDown as error:
        raise queue_down() from error
    if closed is None:
        raise not_found(name)
    return closed


def remix_poll(svc: Services, name: str) -> Remixed:
    """Rewrite a closed, drained poll's rows with fresh ids in one transaction, then purge."""
    poll = stored_poll(svc, name)
    replicas = svc.settings.stream_replicas
    with svc.pool.connection() as conn:
        try:
            return _on_queue(svc, lambda js: lifecycle.remix(js, conn, poll, replicas=replicas))
        except QueueDown as error:
            raise unavailable(
                "queue_unavailable",
                "NATS cannot say whether the sinks drained the poll; try again in a few seconds",
            ) from error
        except lifecycle.NotReady as refused:
            retry = {"Retry-After": RETRY_AFTER} if refused.retry else None
            raise ApiError(409, refused.code, str(refused), headers=retry) from refused


def turnout(svc: Services, poll: Poll) -> dict[str, int]:
    """Eligible voters, and the voters and votes the database holds so far."""
    with svc.pool.connection() as conn:
        votes, voters, _ = storage.tally(conn, poll.uid)
    return {"eligible": poll.eligible, "voters": voters, "votes": votes}


def described(svc: Services, poll: Poll) -> dict[str, Any]:
    """The poll as the API shows it: its summary, turnout, and when it was re-mixed and
    purged (null until then)."""
    with svc.pool.connection() as conn:
        votes, voters, _ = storage.tally(conn, poll.uid)
        history = lifecycle.history(conn, poll.name)
    turnout = {"eligible": poll.eligible, "voters": voters, "votes": votes}
    return {**poll.summary(), "turnout": turnout, **history}


def voter_ids(svc: Services, poll: Poll) -> list[str]:
    with svc.pool.connection() as conn:
        return storage.voter_ids(conn, poll.name)


# quote(voter, safe="") of an ASCII voter id, by one str.translate: a million invitations
# spend a third of their time in quote's general path otherwise.
_QUOTE_ASCII = {
    c: f"%{c:02X}"
    for c in range(128)
    if chr(c) not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
}


def _quoted(voter: str) -> str:
    return voter.translate(_QUOTE_ASCII) if voter.isascii() else quote(voter, safe="")


def each_invitation(
    svc: Services, poll: Poll, voters: Iterable[str] | None = None
) -> Iterator[Invitation]:
    """The invitations of ``voters`` (all the poll's if None) one by one, made as they are
    read: a poll of a million voters is never held as a million invitations, nor as a million
    ids (its list is read a page at a time, each page with a connection of its own for a
    moment, so a slow reader holds none). The first page is read before this returns, so a
    database that is down is said before a response starts."""
    settings = svc.settings
    chosen = _voter_pages(svc, poll) if voters is None else iter([list(voters)])
    first = next(chosen, [])

    def made() -> Iterator[Invitation]:
        token_of = tokens.voter_tokens(settings.secret_bytes, poll.uid)
        start = f"{settings.base_url}/vote/{poll.name}?voter="
        generation = _generation
        secret = settings.secret_bytes
        for page in itertools.chain([first], chosen):
            for voter in page:
                token = token_of(voter, generation(secret, poll, voter))
                yield Invitation(voter, token, f"{start}{_quoted(voter)}&token={token}")

    return made()


def _voter_pages(svc: Services, poll: Poll) -> Iterator[list[str]]:
    after = -1
    while True:
        with svc.pool.connection() as conn:
            page = storage.voter_page(conn, poll.uid, after)
        if not page:
            return
        after = page[-1][0]
        yield [voter for _, voter in page]


def _generation(secret: bytes, poll: Poll, voter: str) -> int:
    """How many times this voter's link was reissued (0 for nearly everyone: no HMAC)."""
    if not poll.reissued:
        return 0
    return poll.reissued.get(tokens.reissue_key(secret, poll.uid, voter), 0)


def voted(svc: Services, poll: Poll) -> set[str]:
    """The voters who voted, never what: stored ones and, in ``prevent`` mode, queued ones.

    Votes reach the database in mixed batches, so the stored voters lag behind; the
    reservations of ``prevent`` mode are there as soon as a vote is accepted.
    """
    with svc.pool.connection() as conn:
        found = storage.voted(conn, poll.uid)
    try:
        reserved = svc.box.call(svc.box.reserved(poll))
    except QueueDown:
        reserved = set()
    if reserved:
        found |= {
            voter
            for voter in voter_ids(svc, poll)
            if tokens.reservation_key(poll.uid, voter) in reserved
        }
    return found


def accepted_voters(svc: Services, poll: Poll) -> int | None:
    """How many voters have a vote accepted, counted from reservations; None if unknown."""
    if poll.rules.duplicates != "prevent":
        return None
    try:
        return len(svc.box.call(svc.box.reserved(poll)))
    except QueueDown:
        return None


def results_of(svc: Services, poll: Poll, *, admin: bool) -> dict[str, Any]:
    """The results document; before close only the admin sees an ``afterClose`` poll's."""
    phase = poll.phase()
    hidden = poll.rules.results.visibility == "afterClose" and phase is not Phase.CLOSED
    if hidden and not admin:
        raise ApiError(
            403,
            "results_not_public_yet",
            "this poll shows its results after it closes (the admin token sees them now)",
        )
    with svc.pool.connection() as conn:
        votes, voters, stored = storage.tally(conn, poll.uid)
    pending = pending_votes(svc, poll, votes)
    return summarize(poll.rules, phase.value, votes, voters, stored, pending)


def open_ballot(svc: Services, name: str, voter: str, token: str) -> Poll:
    """The poll a voter may vote in now with this invitation, or the reason why not."""
    check_name(name)
    poll = svc.box.recent(name)
    if poll is None:
        try:
            poll = svc.box.call(svc.box.poll(name))
        except QueueDown as error:
            raise queue_down() from error
    if poll is None:
        raise _unregistered(svc, name)
    phase = poll.phase()
    if phase is Phase.CLOSED:
        raise poll_closed()
    if phase is Phase.PENDING:
        opens = poll.rules.schedule.opens_at
        raise ApiError(409, "poll_not_open", f"this poll opens at {opens:%Y-%m-%d %H:%M %Z}")
    secret = svc.settings.secret_bytes
    current = _generation(secret, poll, voter)
    if not tokens.is_valid(secret, poll.uid, voter, token, current):
        # A link reissued a moment ago, which this worker's copy of the poll does not know
        # yet: read the registry now (only for a token of the next generation, so a guessed
        # token costs no NATS request).
        newer = None
        if tokens.is_valid(secret, poll.uid, voter, token, current + 1):
            try:
                newer = svc.box.call(svc.box.poll(name, fresh=True))
            except QueueDown as error:
                raise queue_down() from error
        if newer is None or _generation(secret, newer, voter) != current + 1:
            raise ApiError(
                403, "invalid_token", "this invitation token is not valid for this voter and poll"
            )
        poll = newer
    return poll


def poll_closed() -> ApiError:
    return ApiError(410, "poll_closed", "this poll is closed; votes are no longer taken")


def _unregistered(svc: Services, name: str) -> ApiError:
    """Why a poll the registry does not know takes no vote: there is no such poll, or it was
    purged (NATS keeps nothing of a purged poll; its row says it is closed)."""
    try:
        with svc.pool.connection() as conn:
            stored = storage.get_poll(conn, name)
    except psycopg.OperationalError as error:
        raise database_down() from error
    if stored is not None and stored.phase() is Phase.CLOSED:
        return poll_closed()
    return not_found(name)


def has_voted(svc: Services, poll: Poll, voter: str) -> bool:
    """Whether this voter's vote was accepted already (``prevent`` mode; else False)."""
    try:
        return svc.box.call(svc.box.has_voted(poll, voter))
    except QueueDown as error:
        raise queue_down() from error


def cast(svc: Services, poll: Poll, voter: str, choice: str) -> None:
    """Queue one vote durably (the voter and token were checked by ``open_ballot``)."""
    if choice not in poll.rules.choices:
        raise ApiError(
            400,
            "invalid_choice",
            f"choice {choice!r} is not one of {', '.join(poll.rules.choices)}",
        )
    try:
        svc.box.call(svc.box.cast(poll, voter, choice))
    except AlreadyVoted as error:
        raise ApiError(409, "already_voted", "this invitation has been used to vote") from error
    except PollClosed as error:
        raise poll_closed() from error
    except QueueDown as error:
        raise queue_down() from error
    svc.metrics.count("privpoll_votes_accepted_total")
