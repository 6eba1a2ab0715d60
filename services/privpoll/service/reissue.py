"""Reissuing a voter's link: a new token, and the old one refused from then on.

A token is an HMAC of (poll uid, voter, generation); the generation of each reissued voter
lives in the poll's row and registry entry, which every ingest worker caches, so checking a
vote's token never reads the database. The voter's reservation (``prevent`` mode) does not
depend on the generation: a voter who voted cannot vote again with the new link.
"""

from __future__ import annotations

from privpoll.bus import topology
from privpoll.bus.ballot_box import QueueDown
from privpoll.core import tokens
from privpoll.core.poll import Phase
from privpoll.db import storage
from privpoll.service.errors import ApiError, queue_down
from privpoll.service.polls import Invitation, each_invitation, not_found, stored_poll
from privpoll.service.services import Services


def reissue(svc: Services, name: str, voter: str) -> Invitation:
    poll = stored_poll(svc, name)
    if poll.phase() is Phase.CLOSED:
        raise ApiError(409, "poll_closed", "this poll is closed: a new link could not vote")
    with svc.pool.connection() as conn:
        if not storage.is_voter(conn, name, voter):
            raise ApiError(
                404, "voter_not_found", f"{voter!r} is not on this poll's list of voters"
            )
        key = tokens.reissue_key(svc.settings.secret_bytes, poll.uid, voter)
        updated = storage.reissue(conn, name, key)
    if updated is None:
        raise not_found(name)

    async def publish() -> None:
        registry = await topology.registry_bucket(await svc.box.jetstream())
        await registry.put(name, updated.to_registry())
        # Every worker drops its copy now: the old link is refused from the next request on.
        await svc.box.announce(name)

    try:
        svc.box.call(publish())
    except QueueDown as error:
        # The row holds the new generation; the registry gets it with the next write.
        raise queue_down() from error
    svc.box.remember(updated)
    return next(each_invitation(svc, updated, [voter]))
