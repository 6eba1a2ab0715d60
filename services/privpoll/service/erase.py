"""Deleting a poll for good: its vote rows, its row, its stream, voters bucket and registry
entry (and on Kubernetes the Poll resource, whose removal takes the sink Deployments).

The answer says what was erased, counted just before it went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from privpoll import cluster
from privpoll.bus.ballot_box import QueueDown
from privpoll.service import lifecycle
from privpoll.service.errors import ApiError, queue_down, unavailable
from privpoll.service.polls import not_found, stored_poll
from privpoll.service.services import Services

# How long to wait for the operator to finish removing a deleted Poll's sinks and stream.
OPERATOR_WAIT = 30.0


@dataclass(frozen=True)
class Erased:
    name: str
    votes: int
    ballots: int
    voters: int
    resource: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "erased": {
                "votes": self.votes,
                "ballots": self.ballots,
                "invitations": self.voters,
                "queue": True,
                "pollResource": self.resource,
            },
            "message": self.describe(),
        }

    def describe(self) -> str:
        where = "; the Poll resource and its sinks are gone" if self.resource else ""
        return (
            f"poll {self.name} deleted: {self.votes} stored "
            f"{'vote' if self.votes == 1 else 'votes'} and {self.ballots} ballot "
            f"{'row' if self.ballots == 1 else 'rows'} (real and fake) erased, its "
            f"{self.voters} invitation {'link' if self.voters == 1 else 'links'} stop working, "
            f"its queue (stream, voters bucket, registry entry) removed{where}"
        )


def delete_poll(svc: Services, name: str) -> Erased:
    """Erase the poll: first what takes votes, then the rows, so none arrive after."""
    poll = stored_poll(svc, name)
    on_cluster = svc.settings.control_plane == "kubernetes"
    if on_cluster:
        _delete_resource(svc, name)
    with svc.pool.connection() as conn:

        async def remove() -> tuple[int, int] | None:
            return await lifecycle.delete(await svc.box.jetstream(), conn, name, uid=str(poll.uid))

        try:
            counted = svc.box.call(remove())
        except QueueDown as error:
            raise queue_down() from error
    if counted is None:
        raise not_found(name)
    votes, ballots = counted
    return Erased(name, votes, ballots, poll.eligible, on_cluster)


def _delete_resource(svc: Services, name: str) -> None:
    """Delete the Poll resource and wait until the operator has removed it (its sinks stop
    before the rows are deleted, so no batch lands after)."""
    namespace = svc.settings.namespace
    try:
        cluster.delete_resource(namespace, name)
        deadline = time.monotonic() + OPERATOR_WAIT
        while cluster.resource_exists(namespace, name):
            if time.monotonic() > deadline:
                raise unavailable(
                    "deleting",
                    f"the Poll {name!r} is being deleted; the operator has not finished "
                    f"(kubectl get poll {name} shows why): try again in a few seconds",
                )
            time.sleep(0.25)
    except ApiError:
        raise
    # The Kubernetes client raises its own, urllib3's and the socket's errors alike.
    except Exception as error:
        raise unavailable(
            "kubernetes_unavailable",
            "the Kubernetes API did not take the deletion; try again in a few seconds",
        ) from error
