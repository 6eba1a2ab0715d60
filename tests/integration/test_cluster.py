"""A three-node JetStream cluster under voting: kill -9 the leader of a poll's stream, then of
its voters bucket, then a follower. Votes in the election gap are refused with 503 and
Retry-After (never a 500), no vote answered 202 is lost or stored twice, and the killed node
comes back and catches up. ``make chaos`` runs it with PRIVPOLL_CHAOS_VOTES voters a kill."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from privpoll.bus import naming
from privpoll.local.embedded import PostgresServer
from tests.integration.conftest import System, Witness, poll_spec
from tests.integration.nats_cluster import NatsCluster
from tests.integration.test_chaos import VOTES, Load, in_background, verify

OUTAGE = 4.0  # seconds of voting with the node down


@pytest.fixture(scope="module")
def clustered(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[tuple[NatsCluster, System]]:
    root = tmp_path_factory.mktemp("cluster")
    cluster = NatsCluster(root / "nats")
    cluster.start()
    system = System(root / "system", cluster.first, postgres, env={"PRIVPOLL_STREAM_REPLICAS": "3"})
    try:
        system.start()
        yield cluster, system
    finally:
        system.stop()
        cluster.stop()


def _victim(cluster: NatsCluster, poll: str, which: str) -> str:
    stream = cluster.placement(naming.stream(poll))
    bucket = cluster.placement(naming.bucket_stream(naming.voters_bucket(poll)))
    if which == "stream leader":
        assert stream.leader is not None
        return stream.leader
    if which == "bucket leader":
        assert bucket.leader is not None
        return bucket.leader
    # A follower of both that no client is connected to, when there is one: the kill that
    # no voter should notice.
    followers = [p.name for p in stream.replicas or [] if p.name and p.name != bucket.leader]
    assert followers, stream
    quiet = [name for name in followers if cluster.nodes[name] is not cluster.first]
    return (quiet or followers)[0]


@pytest.mark.parametrize("which", ["stream leader", "bucket leader", "follower"])
def test_a_node_killed_loses_no_acknowledged_vote(
    clustered: tuple[NatsCluster, System], which: str
) -> None:
    cluster, system = clustered
    poll = f"cluster-{which.replace(' ', '-')}"
    voters = [f"voter-{i:04d}" for i in range(VOTES)]
    system.create_poll(poll, poll_spec(voters))
    streams = [naming.stream(poll), naming.bucket_stream(naming.voters_bucket(poll))]
    cluster.wait_caught_up(streams)
    witness = Witness(system.nats.url, poll)
    load = Load(system, poll, system.invitations(poll))
    # Four threads spread the votes over about three times the outage.
    voting = in_background(lambda: load.run(threads=4, pause=4 * 3 * OUTAGE / VOTES))
    time.sleep(OUTAGE / 2)
    name = _victim(cluster, poll, which)
    cluster.nodes[name].kill()
    killed_at = time.monotonic()
    time.sleep(OUTAGE)
    cluster.nodes[name].start()
    down_for = time.monotonic() - killed_at
    caught_up = cluster.wait_caught_up(streams)
    voting.join()
    load.retry_refused()
    fault = f"nats cluster: {which} ({name}) killed -9"
    verify(system, witness, poll, load, fault)
    statuses = [answer.status for seen in load.answers.values() for answer in seen]
    print(
        f"\n{fault}: {len(load.answers)} voters, {len(load.acknowledged())} acknowledged, "
        f"{statuses.count(503)} answers 503 (retried), {statuses.count(500)} answers 500; "
        f"node down {down_for:.1f} s, its copies current {caught_up:.1f} s after its restart"
    )
