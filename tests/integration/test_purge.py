"""Once a poll is purged NATS keeps nothing of it (issue 27): no stream, no voters bucket, no
registry entry, not even the marker that said the entry was removed. A late vote still reads
"closed" (the database says so), and a restart brings none of it back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from privpoll.bus import naming
from privpoll.local.embedded import NatsServer, PostgresServer
from tests.integration.conftest import System, fresh_database, poll_spec


def nats_holds(url: str) -> tuple[list[str], dict[str, int]]:
    """Every stream's name, and the registry's messages by subject."""

    async def read() -> tuple[list[str], dict[str, int]]:
        nc = await naming.connect(url, "test")
        try:
            js = nc.jetstream()
            streams = sorted(s.config.name or "" for s in await js.streams_info())
            info = await js.stream_info(naming.registry_stream(), subjects_filter=">")
            return streams, dict(info.state.subjects or {})
        finally:
            await nc.close()

    return asyncio.run(read())


def test_nats_keeps_nothing_of_a_purged_poll(
    tmp_path: Path, nats: NatsServer, postgres: PostgresServer
) -> None:
    dsn = fresh_database(postgres, "purge")
    voters = [f"voter-{i}" for i in range(6)]
    spec = poll_spec(voters, mixing={"minBatch": 2, "maxWait": "100ms"})
    system = System(tmp_path / "first", nats, postgres, dsn=dsn)
    system.start()
    try:
        system.create_poll("gone", spec)
        system.create_poll("open", spec)
        tokens = system.invitations("gone")
        for voter in voters[:4]:
            assert system.vote("gone", voter, tokens[voter], "pizza").status_code == 202
        streams, registry = nats_holds(nats.url)
        assert naming.stream("gone") in streams
        assert f"$KV.{naming.REGISTRY_BUCKET}.gone" in registry

        system.close("gone")
        system.wait_remixed("gone", purged=True)
        late = system.vote("gone", voters[5], tokens[voters[5]], "sushi")
        assert late.status_code == 410, late.text
        assert late.json()["error"]["code"] == "poll_closed"
        # A poll that never existed is still not found.
        assert system.vote("never", voters[5], tokens[voters[5]], "sushi").status_code == 404
        assert system.results("gone")["votes"]["total"] == 4
    finally:
        system.stop()

    def only_the_open_poll() -> None:
        streams, registry = nats_holds(nats.url)
        left = [s for s in streams if "gone" in s]
        assert not left, streams
        # One message, the open poll's entry: the purged poll's entry and its purge marker
        # are both gone.
        assert registry == {f"$KV.{naming.REGISTRY_BUCKET}.open": 1}, registry

    only_the_open_poll()
    again = System(tmp_path / "again", nats, postgres, dsn=dsn)
    again.start()
    try:
        assert again.vote("gone", voters[5], tokens[voters[5]], "sushi").status_code == 410
        closed = again.http.post("/api/v1/polls/gone/close", headers=again.admin)
        assert closed.status_code == 200, closed.text
        assert again.http.get("/api/v1/polls/gone").json()["purgedAt"] is not None
    finally:
        again.stop()
    only_the_open_poll()
