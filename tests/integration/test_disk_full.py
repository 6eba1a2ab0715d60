"""Full disks: the NATS store or PostgreSQL's data folder on a small filesystem that fills.
Votes are refused with 503 (never a 202 that is later lost) while NATS cannot store them;
the sinks hold what they cannot write; everything resumes once space is freed."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from privpoll.local.embedded import NatsServer, PostgresServer
from tests.integration.conftest import System, Witness, poll_spec
from tests.integration.small_disk import fill, free_bytes, small_disk
from tests.integration.test_chaos import VOTES, Load, record_figures, verify
from tests.integration.test_faults import pending_acks

REFUSALS = 8  # votes refused on the full disk before space is freed


def test_a_full_nats_store_refuses_votes_and_loses_none(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    store = tmp_path / "nats" / "jetstream"
    with small_disk(store, "8m"):
        nats = NatsServer(tmp_path / "nats")
        nats.start()
        system = System(tmp_path / "system", nats, postgres)
        try:
            system.start()
            voters = [f"voter-{i:04d}" for i in range(VOTES)]
            system.create_poll("full", poll_spec(voters))
            witness = Witness(nats.url, "full")
            load = Load(system, "full", system.invitations("full"))
            before, during = voters[: VOTES // 4], iter(voters[VOTES // 4 :])
            for voter in before:
                load._one(voter)
            # The disk fills: a little room for the votes that come, then none.
            ballast = fill(store, leave=64 * 1024)
            refused = 0
            for voter in during:
                load._one(voter)
                refused += load.answers[voter][-1].status == 503
                if refused == REFUSALS:
                    break
            full = Counter(s for v in load.answers for s in load.answers[v])
            assert refused == REFUSALS, f"the disk never filled: {full}"
            # Space is freed. nats-server 2.15 keeps a stream that failed to write failed
            # until it restarts: try first, then restart it as its supervisor would.
            ballast.unlink()
            freed = free_bytes(store)
            first_after = next(during)
            load._one(first_after)
            resumed_alone = load.answers[first_after][-1]
            nats.restart()
            for voter in during:
                load._one(voter)
            load.retry_refused(timeout=120)
            verify(system, witness, "full", load, "nats store's filesystem full (8 MB tmpfs)")
            statuses = load.counted()
            print(
                f"\nNATS store full: {dict(full)} while filling; {freed // 1024} KiB freed; a vote "
                f"right after freeing answered {resumed_alone}; after nats-server's restart every "
                f"refused voter got in: {dict(statuses)} in all, {len(load.acknowledged())} "
                f"acknowledged, all stored once"
            )
        finally:
            system.stop()
            nats.stop()


def test_a_full_database_disk_holds_votes_in_the_stream_and_loses_none(
    tmp_path: Path, nats: NatsServer
) -> None:
    cluster = tmp_path / "postgres" / "cluster"
    with small_disk(cluster, "160m", mode="0700"):
        postgres = PostgresServer(tmp_path / "postgres")
        postgres.start()
        system = System(tmp_path / "system", nats, postgres)
        try:
            system.start()
            voters = [f"voter-{i:04d}" for i in range(VOTES)]
            system.create_poll("dbfull", poll_spec(voters, mixing={"minBatch": 5, "maxWait": "1s"}))
            witness = Witness(nats.url, "dbfull")
            load = Load(system, "dbfull", system.invitations("dbfull"))
            first, second, third = (
                voters[: VOTES // 4],
                voters[VOTES // 4 : VOTES // 2],
                voters[VOTES // 2 :],
            )
            for voter in first:
                load._one(voter)
            deadline = time.monotonic() + 60
            while len(system.stored("dbfull")[0]) < len(first) // 2:
                assert time.monotonic() < deadline, system.output()
                time.sleep(0.5)
            stored_before = len(system.stored("dbfull")[0])
            ballast = fill(cluster, leave=0)
            # Votes need NATS only: the voters notice nothing.
            for voter in second:
                load._one(voter)
            time.sleep(5)
            held = {role: pending_acks(nats.url, "dbfull", role) for role in ("actors", "ballots")}
            stored_full = len(system.stored("dbfull")[0]) if postgres.running else None
            crashed = not postgres.running
            refusals = Counter(
                line.split("database unavailable (")[1].split(")")[0]
                for line in system.logs()
                if "database unavailable (" in line
            )
            ballast.unlink()
            if crashed:
                postgres.start()  # as its supervisor would (a StatefulSet, systemd)
            for voter in third:
                load._one(voter)
            verify(system, witness, "dbfull", load, "PostgreSQL's data folder full (tmpfs)")
            statuses = load.counted()
            print(
                f"\nPostgreSQL's disk full: {len(second)} votes meanwhile, answers "
                f"{dict(statuses)}; {stored_before} voters stored before the disk filled, "
                f"{stored_full} while full; the sinks held {held} envelopes unacknowledged and "
                f"retried ({dict(refusals)}); PostgreSQL "
                f"{'stopped (PANIC) and was restarted' if crashed else 'kept running'}; "
                f"after freeing space all {len(load.acknowledged())} acknowledged votes stored once"
            )
        finally:
            system.stop()
            postgres.stop()


def test_a_jetstream_store_limit_refuses_votes_and_resumes_by_itself(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """The chart's way (nats.jetstream.maxFile below the volume's size): JetStream refuses
    to store past its limit, long before the filesystem fills, and takes votes again as soon
    as the sinks have drained the stream, with no restart."""
    store = tmp_path / "nats" / "jetstream"
    limit = tmp_path / "jetstream.conf"
    limit.write_text("jetstream {\n  max_file_store: 256KB\n}\n")
    with small_disk(store, "8m"):
        nats = NatsServer(tmp_path / "nats", options=["-c", str(limit)])
        nats.start()
        system = System(tmp_path / "system", nats, postgres)
        # Fixed: in prevent mode every voter's reservation stays in the store, and 256 KB
        # holds those of 600 voters with room for the envelopes.
        voters = [f"voter-{i:04d}" for i in range(600)]
        try:
            system.start()
            system.create_poll("limit", poll_spec(voters))
            load = Load(system, "limit", system.invitations("limit"))
            # The database is away: the sinks hold every envelope, the stream grows.
            postgres.stop()
            try:
                remaining = iter(voters)
                refused = 0
                for voter in remaining:
                    load._one(voter)
                    refused += load.answers[voter][-1].status == 503
                    if refused == REFUSALS:
                        break
                full = Counter(s for seen in load.answers.values() for s in seen)
                lowest_free = free_bytes(store)
            finally:
                postgres.start()
            assert refused == REFUSALS, f"the store never reached its limit: {full}"
            # The sinks store and acknowledge what they held: JetStream frees it, votes resume.
            started = time.monotonic()
            load.retry_refused(timeout=120)
            resumed_after = time.monotonic() - started
            for voter in remaining:
                load._one(voter)
            load.retry_refused(timeout=120)
            system.close("limit")
            acknowledged = load.acknowledged()
            deadline = time.monotonic() + 180
            while len(system.stored("limit")[0]) < len(acknowledged):
                assert time.monotonic() < deadline, system.output()
                time.sleep(0.5)
            stored = Counter(v for _, v in system.stored("limit")[0])
            statuses = load.counted()
            record_figures(
                "jetstream store limit reached", len(voters), acknowledged, stored, statuses
            )
            print(
                f"\nJetStream store limit (256 KB) with the database away: {dict(full)}; the "
                f"filesystem kept {lowest_free // 1024} KiB free; refused voters got in "
                f"{resumed_after:.1f} s after the database came back, without a restart: "
                f"{dict(statuses)}, {len(acknowledged)} acknowledged, "
                f"{sum(stored.values())} stored"
            )
            assert 500 not in statuses
            assert set(stored) == acknowledged
            assert all(stored[v] == 1 for v in acknowledged - load.refused())
        finally:
            system.stop()
            nats.stop()
