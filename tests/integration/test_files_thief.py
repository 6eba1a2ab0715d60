"""A thief with a copy of the whole data folder of ``privpoll up`` (``privpoll audit --files``):
during voting no stored vote is readable in the queue; after the purge nothing of the poll is
left in the heap, its free space, the indexes, the WAL or the queue (docs/privacy.md)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from privpoll.audit import files
from privpoll.db import forget, migrations, storage
from privpoll.local.embedded import PostgresServer, free_port
from tests.integration.conftest import fresh_database, poll_spec
from tests.integration.test_local_runtime import start, stop


def audit_files(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "privpoll", "audit", "--files", str(folder), "--json"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = dict(json.loads(done.stdout))
    return found


def of_poll(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [p for p in report["polls"] if p["name"] == name]
    assert len(found) == 1, report
    return found[0]


def test_a_copy_of_the_data_folder_during_voting_and_after_the_purge(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PRIVPOLL_")},
        "PRIVPOLL_DATA_DIR": str(tmp_path / "data"),
        "PRIVPOLL_HTTP_ADDR": f"127.0.0.1:{port}",
    }
    process, token = start(env, tmp_path / "up.out")
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        admin = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        voters = [f"voter-{i:03d}" for i in range(40)]
        spec = poll_spec(voters, mixing={"minBatch": 2, "maxWait": "100ms"})
        created = http.post("/api/v1/polls", json={"name": "stolen", "spec": spec}, headers=admin)
        assert created.status_code == 201, created.text
        links = http.get("/api/v1/polls/stolen/invitations", headers=admin).json()
        tokens = {item["voter"]: item["token"] for item in links}
        for i, voter in enumerate(voters[:30]):
            body = {"voter": voter, "token": tokens[voter], "choice": ["pizza", "sushi"][i % 2]}
            answer = http.post("/api/v1/polls/stolen/votes", json=body)
            assert answer.status_code == 202, answer.text
        while http.get("/api/v1/polls/stolen").json()["turnout"]["votes"] < 20:
            assert time.monotonic() < deadline + 60
            time.sleep(0.2)
        during = files.copy_running(tmp_path / "data", tmp_path / "during")
        before = http.get("/api/v1/polls/stolen").json()
        assert (before["remixedAt"], before["purgedAt"]) == (None, None)

        assert http.post("/api/v1/polls/stolen/close", headers=admin).status_code == 200
        deadline = time.monotonic() + 120
        while (state := http.get("/api/v1/polls/stolen").json())["purgedAt"] is None:
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["remixedAt"] is not None
        assert state["remixedAt"] <= state["purgedAt"]
        after = files.copy_running(tmp_path / "data", tmp_path / "after")
        # The stream and bucket are gone; a vote still reads "closed".
        late = {"voter": voters[-1], "token": tokens[voters[-1]], "choice": "pizza"}
        assert http.post("/api/v1/polls/stolen/votes", json=late).status_code == 410
        assert http.get("/api/v1/polls/stolen/results").json()["votes"]["total"] == 30
    finally:
        stop(process)

    # A restart does not bring the purged poll's stream, bucket or registry entry back (the
    # restarted sinks do not even learn its name), and a vote reads 410.
    process, _ = start({**env, "PRIVPOLL_ADMIN_TOKEN": token}, tmp_path / "up2.out")
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if http.get("/readyz").status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert http.get("/api/v1/polls/stolen").json()["purgedAt"] == state["purgedAt"]
        assert http.post("/api/v1/polls/stolen/votes", json=late).status_code == 410
    finally:
        stop(process)
    streams = list((tmp_path / "data" / "nats").rglob("streams/*"))
    assert streams
    assert not [s for s in streams if s.name.endswith("stolen")], streams

    stolen = audit_files(during, env)
    seen = of_poll(stolen, "stolen")
    # The files are read: the batches are in the WAL (the heap files may not have them yet),
    # with their transactions and commit times; the stream and bucket exist ...
    assert seen["walRows"] > 0
    assert stolen["walCommitTimes"] >= 1
    assert seen["stream"]
    assert seen["votersBucket"]
    # ... but the queue's store is encrypted with a key kept outside the folder.
    assert seen["readableEnvelopes"] == 0
    assert seen["readableVoterKeys"] == 0

    report = audit_files(after, env)
    assert report["walVoteTransactions"] == 0
    gone = of_poll(report, "stolen")
    assert gone["liveRows"] > 0
    for what in (
        "oldHeapVersions",
        "oldFreeSpaceTuples",
        "oldTransactionsInHeap",
        "oldIndexEntries",
        "oldWalRows",
        "readableEnvelopes",
        "readableVoterKeys",
    ):
        assert gone[what] == 0, (what, gone)
    assert not gone["stream"]
    assert not gone["votersBucket"]


def test_free_space_and_index_pages_keep_deleted_rows_until_the_files_are_rewritten(
    postgres: PostgresServer,
) -> None:
    """What the issue measured, and why the purge rewrites the files: VACUUM unlinks the old
    tuples, but their bytes stay in the pages' free space and the index keeps their keys."""
    dsn = fresh_database(postgres, "freespace")
    poll, other = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn)
        # Two polls' rows on the same pages, as the sinks of polls open at once write them.
        for _ in range(30):
            storage.write_ballots(conn, poll, [(uuid.uuid4(), "pizza") for _ in range(10)])
            storage.write_ballots(conn, other, [(uuid.uuid4(), "sushi") for _ in range(10)])
        conn.execute("DELETE FROM ballots WHERE poll = %s", (poll,))
        conn.execute("VACUUM (INDEX_CLEANUP ON) ballots")
        conn.execute("CHECKPOINT")
        catalog = files.read_catalog(conn, postgres.cluster)
        vacuumed = files.Found()
        files.scan_heap(catalog.heaps["ballots"], catalog.block, {poll}, vacuumed)
        assert not vacuumed.live[poll]
        assert not vacuumed.versions[poll]  # no line pointer: heap.py would see nothing
        # ... but the bytes are there (150 of 300 once; compaction overwrote the others).
        assert len(vacuumed.remnants[poll]) >= 100
        in_index = files.keys_in(catalog.indexes["ballots"], {poll})[poll]
        assert len(in_index) >= 250

        forget.rewrite_tables(conn)
        conn.execute("CHECKPOINT")
        catalog = files.read_catalog(conn, postgres.cluster)
        rewritten = files.Found()
        files.scan_heap(catalog.heaps["ballots"], catalog.block, {poll}, rewritten)
        assert not rewritten.remnants[poll]
        assert not files.keys_in(catalog.indexes["ballots"], {poll})[poll]


def test_audit_settings_says_what_the_embedded_database_keeps(postgres: PostgresServer) -> None:
    """privpoll up's PostgreSQL keeps no WAL beyond a purge, and says what no query can tell."""
    env = {**os.environ, "PRIVPOLL_DATABASE_URL": postgres.dsn}
    argv = [sys.executable, "-m", "privpoll", "audit", "--settings", "--json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    found = {f["name"]: f for f in json.loads(done.stdout)["settings"]}
    assert set(found) == {"archive_mode", "wal_keep_size", "wal_recycle", "replication slots"}
    assert all(f["safe"] for f in found.values()), found
    assert json.loads(done.stdout)["cannotCheck"]
