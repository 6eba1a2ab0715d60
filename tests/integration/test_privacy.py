"""Privacy you can measure: the linkage attack against real runs, the re-mixer on disk."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench import baselines
from privpoll.audit import linkage, thief
from privpoll.audit.linkage import CERTAIN, NoiseModel
from privpoll.bus import naming
from privpoll.core.spec import PollRules
from privpoll.local.embedded import NatsServer, PostgresServer
from tests.integration import heap
from tests.integration.conftest import CHOICES, System, Witness, fresh_database, poll_spec
from tests.ordering import INDEPENDENT, bound, disk_order_of, pooled, spearman


def true_choice(i: int) -> str:
    return CHOICES[0] if i % 10 < 5 else CHOICES[1] if i % 10 < 8 else CHOICES[2]


@contextmanager
def recording(dsn: str, directory: Path, polls: Sequence[str]) -> Iterator[None]:
    """A thief's replica: a copy of the poll's rows whenever they changed, every 20 ms."""
    stop = threading.Event()
    thread = threading.Thread(
        target=thief.record,
        args=(dsn, directory),
        kwargs={"stop": stop, "interval": 0.02, "polls": polls},
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def cast_paced(
    system: System, name: str, votes: Sequence[tuple[str, str]], per_second: float
) -> None:
    """Votes one after the other, slowly enough that the sinks commit many small batches."""
    tokens = system.invitations(name)
    for voter, choice in votes:
        response = system.vote(name, voter, tokens[voter], choice)
        assert response.status_code == 202, response.text
        time.sleep(1 / per_second)


def test_default_settings_expose_nobody_even_with_a_snapshot_after_every_commit(
    system: System, tmp_path: Path
) -> None:
    voters = [f"voter-{i:03d}" for i in range(150)]
    votes = [(v, true_choice(i)) for i, v in enumerate(voters)]
    spec = poll_spec(voters, mixing={"minBatch": 10, "maxWait": "1s"})
    del spec["noise"]  # the defaults; a short maxWait keeps batches small, the hard case
    system.create_poll("defaults", spec)
    snapshots = tmp_path / "snapshots"
    with recording(system.postgres.dsn, snapshots, ["defaults"]):
        cast_paced(system, "defaults", votes, per_second=25)
        system.close("defaults")
        system.wait_remixed("defaults")

    dumps = thief.load(snapshots, "defaults")
    result, _ = thief.inference("defaults", dumps)
    # The attacker saw the batches before the re-mixer merged them, and told them apart.
    assert result.epoch == 0
    assert result.actor_commits >= 3, result
    assert result.ballot_commits >= 3, result
    assert result.aligned, result.notes
    assert result.exposed == 0
    assert result.largest_posterior < CERTAIN
    # After the re-mixer, the database alone shows one commit per table: nothing to link.
    after, _ = thief.inference("defaults", dumps[-1:])
    assert (after.actor_commits, after.ballot_commits) == (1, 1)
    assert len({f.posterior for f in after.findings}) == 1

    # The same workload through a LimeSurvey-style design falls to the same attacker.
    with system.db() as conn:
        lime = baselines.run(conn, "limesurvey", "baseline_limesurvey", voters, votes)
    exposed = linkage.attack(lime, NoiseModel.no_noise(CHOICES))
    assert exposed.exposed >= 0.95 * len(voters)
    assert exposed.accuracy(dict(votes)) == 1.0

    # And `privpoll audit` says the same as the attacker it runs.
    (tmp_path / "truth.json").write_text(json.dumps(dict(votes)))
    env = {**os.environ, "PRIVPOLL_DATABASE_URL": system.postgres.dsn}
    done = subprocess.run(
        [sys.executable, "-m", "privpoll", "audit", "defaults", "--snapshots", str(snapshots),
         "--truth", str(tmp_path / "truth.json"), "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["voters"] == 150
    assert found["exposed"] == 0
    assert found["largestPosterior"] == result.largest_posterior
    assert found["accuracy"] is not None


def test_randomized_response_bounds_what_the_attacker_can_learn(
    system: System, tmp_path: Path
) -> None:
    epsilon = 2.0
    voters = [f"voter-{i:03d}" for i in range(120)]
    votes = [(v, CHOICES[i % 3]) for i, v in enumerate(voters)]
    # No fake ballots and commits of one or two envelopes: randomized response is all there is.
    spec = poll_spec(
        voters,
        noise={
            "fakeVotes": {"distribution": "fixed", "count": 0, "min": 0},
            "randomizedResponse": {"epsilon": epsilon},
        },
        mixing={"minBatch": 1, "maxWait": "100ms"},
    )
    system.create_poll("coins", spec)
    snapshots = tmp_path / "snapshots"
    with recording(system.postgres.dsn, snapshots, ["coins"]):
        cast_paced(system, "coins", votes, per_second=15)
        system.close("coins")
        system.wait_remixed("coins")
    dumps = thief.load(snapshots, "coins")
    result, _ = thief.inference("coins", dumps)
    m = len(CHOICES)
    bound = math.exp(epsilon) / (math.exp(epsilon) + m - 1)
    assert result.exposed == 0
    # The attacker's prior comes from the published (noisy) results; under a prior pi the
    # bound is max_j e^eps pi_j / (e^eps pi_j + 1 - pi_j). Its distance from the uniform bound
    # is the sampling error of those results.
    under_prior = max(math.exp(epsilon) * p / (math.exp(epsilon) * p + 1 - p) for p in result.prior)
    assert result.largest_posterior <= under_prior + 1e-9
    # (about 3.5 standard errors of a choice's estimated share at 120 voters)
    assert under_prior - bound < 0.1, result.prior
    # With the true (uniform) prior the bound is exact, and lone votes reach it.
    known = linkage.attack(
        [d.snapshot(dumps[-1].polls["coins"].uid) for d in dumps],
        NoiseModel.of(PollRules.model_validate({k: v for k, v in spec.items() if k != "voters"})),
        prior=[1 / m] * m,
    )
    assert known.largest_posterior <= bound + 1e-9
    assert known.largest_posterior > bound - 0.05, "some commits held a lone vote"


def test_the_remixer_leaves_one_xmin_and_no_old_row_version(system: System, tmp_path: Path) -> None:
    voters = [f"voter-{i:03d}" for i in range(60)]
    votes = [(v, true_choice(i)) for i, v in enumerate(voters)]
    spec = poll_spec(voters, mixing={"minBatch": 5, "maxWait": "200ms"})
    system.create_poll("remix", spec)
    early = system.http.post("/api/v1/polls/remix/remix", headers=system.admin)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "poll_open"
    cast_paced(system, "remix", votes, per_second=15)
    uid = uuid.UUID(system.poll_uid("remix"))
    deadline = time.monotonic() + 30
    while True:
        with system.db() as conn:
            before = xmins(conn, uid)
        if len(before) >= 4:  # each sink wrote at least two batches
            break
        assert time.monotonic() < deadline, system.output()
        time.sleep(0.2)

    # A transaction that began before the close still sees the old rows: VACUUM must keep
    # them, and the on-disk check has to find them.
    with psycopg.connect(system.postgres.dsn) as holder:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM ballots").fetchone()
        system.close("remix")
        system.wait_remixed("remix", purged=False)
        with system.db() as conn:
            after = xmins(conn, uid)
            assert len(after) == 1
            assert not after & before
            stale = [
                t for t in heap.read(conn, system.postgres.cluster, "ballots").of(uid) if t.deleted
            ]
            assert stale, "the old versions are still on disk while a snapshot holds them"
            purged = conn.execute("SELECT purged FROM polls WHERE name = 'remix'").fetchone()
            assert purged == (False,)
        holder.rollback()

    # Once that transaction is gone, privpoll up vacuums again until nothing old remains.
    system.wait_remixed("remix", purged=True)
    with system.db() as conn:
        (xmin,) = xmins(conn, uid)
        for table in ("actors", "ballots"):
            found = heap.read(conn, system.postgres.cluster, table)
            mine = found.of(uid)
            assert mine, table
            assert {t.xmin for t in mine} == {int(xmin)}, table
            assert not any(t.deleted for t in mine), table
            assert found.dead_pointers == 0, table
            # Nor in the pages' free space, nor in the index: the files were rewritten.
            live = {t.key for t in mine}
            assert not found.free_space_keys(uid) - live, table
            index = heap.index_keys(conn, system.postgres.cluster, f"{table}_pkey", uid)
            assert index == live, table
        count = conn.execute(
            "SELECT (SELECT count(*) FROM actors WHERE poll = %s), "
            "(SELECT count(*) FROM ballots WHERE poll = %s)",
            (uid, uid),
        ).fetchone()
    assert count is not None
    assert count[0] == 60
    assert len(mine) == count[1]

    # On demand, `privpoll poll remix` rewrites again with fresh ids.
    env = {
        **os.environ,
        "PRIVPOLL_URL": system.url,
        "PRIVPOLL_ADMIN_TOKEN": "integration-admin-token",
    }
    done = subprocess.run(
        [sys.executable, "-m", "privpoll", "poll", "remix", "remix"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "poll remix remixed: 60 votes" in done.stdout
    with system.db() as conn:
        again = xmins(conn, uid)
    assert len(again) == 1
    assert again != {xmin}


def xmins(conn: psycopg.Connection[Any], poll: uuid.UUID) -> set[str]:
    rows = conn.execute(
        "SELECT xmin::text FROM actors WHERE poll = %s UNION SELECT xmin::text FROM ballots "
        "WHERE poll = %s",
        (poll, poll),
    ).fetchall()
    return {str(r[0]) for r in rows}


class Thief:
    """Copies of a poll's rows, taken every 20 ms while it runs: each commit's rows (one
    ``xmin``) and where they sit on disk (``ctid``), the way a replica or a backup shows them."""

    def __init__(self, dsn: str, poll: uuid.UUID) -> None:
        self.dsn = dsn
        self.poll = poll
        # table -> xmin -> the commit's row keys in their order on disk
        self.commits: dict[str, dict[str, list[str]]] = {"actors": {}, "ballots": {}}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def look(self, conn: psycopg.Connection[Any]) -> dict[str, list[tuple[str, str, str]]]:
        """(xmin, key, value) of every row of the poll, in order on disk, per table."""
        found = {}
        for table, key, value in (("actors", "entry", "voter"), ("ballots", "id", "choice")):
            found[table] = [
                (str(x), str(k), str(v))
                for x, k, v in conn.execute(
                    f"SELECT xmin::text, {key}::text, {value} FROM {table} "  # noqa: S608
                    "WHERE poll = %s ORDER BY ctid",
                    (self.poll,),
                ).fetchall()
            ]
        return found

    def snapshot(self) -> dict[str, list[tuple[str, str, str]]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            found = self.look(conn)
        for table, rows in found.items():
            by_commit: dict[str, list[str]] = {}
            for xmin, key, _ in rows:
                by_commit.setdefault(xmin, []).append(key)
            self.commits[table].update(by_commit)
        return found

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.snapshot()

    def __enter__(self) -> Thief:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.snapshot()


def sinks_hold(system: System, poll: str) -> tuple[int, int]:
    """Envelopes each sink (actors, ballots) holds: delivered and not acked, or pending."""

    async def read() -> tuple[int, int]:
        nc = await naming.connect(system.nats.url, "test")
        try:
            js = nc.jetstream()
            found = []
            for role in naming.ROLES:
                info = await js.consumer_info(naming.stream(poll), naming.consumer(role))
                found.append(int(info.num_pending or 0) + int(info.num_ack_pending or 0))
            return found[0], found[1]
        finally:
            await nc.close()

    return asyncio.run(read())


def test_a_thief_copying_the_database_sees_only_mixed_batches_and_no_arrival_order(
    tmp_path: Path, nats: NatsServer, postgres: PostgresServer
) -> None:
    """Snapshots every 20 ms while people vote, at the close (before the re-mixer, which
    is held still then) and after the re-mix. Every commit of both sinks holds at least
    minBatch envelopes; rows sit on disk in an order unrelated to the order votes came in,
    within each commit and after the re-mix."""
    min_batch, min_fakes = 10, 1
    system = System(tmp_path / "system", nats, postgres, dsn=fresh_database(postgres, "thief"))
    system.start()
    try:
        voters = [f"voter-{i:03d}" for i in range(90)]
        system.create_poll(
            "thief", poll_spec(voters, mixing={"minBatch": min_batch, "maxWait": "300ms"})
        )
        witness = Witness(system.nats.url, "thief")
        uid = uuid.UUID(system.poll_uid("thief"))
        tokens = system.invitations("thief")
        cast = iter(enumerate(voters))

        def vote(count: int, pause: float) -> None:
            for i, voter in itertools.islice(cast, count):
                response = system.vote("thief", voter, tokens[voter], true_choice(i))
                assert response.status_code == 202, response.text
                time.sleep(pause)

        with Thief(system.dsn, uid) as thief:
            vote(60, pause=0.02)
            # Quiet: each sink holds less than 2 minBatch (else it would write). Then just
            # enough votes for both to write once more, keeping minBatch back, and close.
            time.sleep(2)
            held = sinks_hold(system, "thief")
            assert max(held) < 2 * min_batch, held
            commits = [len(thief.commits[t]) for t in naming.ROLES]
            vote(2 * min_batch - min(held), pause=0)
            deadline = time.monotonic() + 30
            while any(
                len(thief.commits[t]) <= n for t, n in zip(naming.ROLES, commits, strict=True)
            ):
                assert time.monotonic() < deadline, system.output()
                time.sleep(0.1)
            time.sleep(1)
            # The re-mixer is held still: what the sinks commit at the close stays in view.
            remixer = system.child_pid("remixer")
            assert remixer is not None
            os.kill(remixer, signal.SIGSTOP)
            try:
                system.close("thief")
                deadline = time.monotonic() + 30
                while sinks_hold(system, "thief") != (0, 0):
                    assert time.monotonic() < deadline, system.output()
                    time.sleep(0.2)
                before = thief.snapshot()
                # Read while the re-mixer is held: after the purge the poll's stream is gone.
                envelopes = witness.envelopes()
            finally:
                os.kill(remixer, signal.SIGCONT)
            system.wait_remixed("thief", purged=False)
        after = thief.snapshot()
    finally:
        system.stop()

    entry_of = {str(e.actor.entry): i for i, e in enumerate(envelopes)}
    voter_at = {e.actor.voter: i for i, e in enumerate(envelopes)}
    ballot_at = {
        str(b.id): (i, j) for i, e in enumerate(envelopes) for j, b in enumerate(e.ballots)
    }
    assert sorted(voter_at) == sorted(voter for _, _, voter in before["actors"])
    assert len(before["ballots"]) == len(ballot_at)

    # Every commit any snapshot saw, the one at the close included: at least minBatch.
    xmins_after = {x for x, _, _ in after["actors"] + after["ballots"]}
    actors = {x: keys for x, keys in thief.commits["actors"].items() if x not in xmins_after}
    ballots = {x: keys for x, keys in thief.commits["ballots"].items() if x not in xmins_after}
    assert len(actors) >= 3, f"commits while open and at the close: {thief.commits['actors']}"
    sizes = sorted(len(keys) for keys in actors.values())
    assert sizes[0] >= min_batch, f"an actor commit below minBatch {min_batch}: {sizes}"
    sizes = sorted(len(keys) for keys in ballots.values())
    assert sizes[0] >= min_batch * (1 + min_fakes), f"a ballot commit below minBatch: {sizes}"

    # Within each commit: no trace of the order the votes came in.
    arrival = {
        **{entry: float(i) for entry, i in entry_of.items()},
        **{ballot: float(i * 1000 + j) for ballot, (i, j) in ballot_at.items()},
    }
    for table, found in (("actors", actors), ("ballots", ballots)):
        statistic = pooled([[arrival[k] for k in keys] for keys in found.values()])
        assert abs(statistic) < INDEPENDENT, f"{table}: rows in arrival order within commits"

    # After the re-mix: one commit, and an order unrelated to the votes' or the old one.
    assert len(xmins_after) == 1
    rho, limit = disk_order_of([float(voter_at[voter]) for _, _, voter in after["actors"]])
    assert abs(rho) < limit, f"actors after the re-mix: rank correlation {rho:.2f}"
    # Ballots get fresh ids: compare the choices the old and the new order put side by side.
    index = {c: float(i) for i, c in enumerate(CHOICES)}
    old = [index[c] for _, _, c in before["ballots"]]
    new = [index[c] for _, _, c in after["ballots"]]
    rho = spearman(old, new)
    assert abs(rho) < bound(len(old)), f"ballots after the re-mix follow the old order ({rho:.2f})"
