"""Privacy you can measure: the linkage attack against real runs, the re-mixer on disk."""

from __future__ import annotations

import json
import math
import os
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
from privpoll.core.spec import PollRules
from tests.integration import heap
from tests.integration.conftest import CHOICES, System, poll_spec


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


def wait_remixed(system: System, name: str, *, purged: bool = True, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with system.db() as conn:
            row = conn.execute(
                "SELECT remixed, purged FROM polls WHERE name = %s", (name,)
            ).fetchone()
        if row is not None and row[0] and (row[1] or not purged):
            return
        assert time.monotonic() < deadline, f"poll {name} was not remixed:\n{system.output()}"
        time.sleep(0.3)


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
        wait_remixed(system, "defaults")

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
        wait_remixed(system, "coins")
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
        wait_remixed(system, "remix", purged=False)
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
    wait_remixed(system, "remix", purged=True)
    with system.db() as conn:
        (xmin,) = xmins(conn, uid)
        for table in ("actors", "ballots"):
            found = heap.read(conn, system.postgres.cluster, table)
            mine = found.of(uid)
            assert mine, table
            assert {t.xmin for t in mine} == {int(xmin)}, table
            assert not any(t.deleted for t in mine), table
            assert found.dead_pointers == 0, table
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
