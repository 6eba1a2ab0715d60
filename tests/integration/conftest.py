"""Real servers for integration tests: nats-server with JetStream, PostgreSQL, privpoll up."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from privpoll.bus import naming
from privpoll.core.envelope import Envelope
from privpoll.db import storage
from privpoll.local.embedded import NatsServer, PostgresServer, free_port
from tests.environment import need

ADMIN = "integration-admin-token"
CHOICES = ["pizza", "sushi", "tacos"]


# A PostgreSQL already running from this folder (``make mutate`` starts one for its thousands
# of short test runs): used as it is, never started or stopped here.
RUNNING_POSTGRES = "PRIVPOLL_TEST_POSTGRES_DIR"


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    if running := os.environ.get(RUNNING_POSTGRES):
        yield PostgresServer(Path(running))
        return
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def localhost_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, self-signed by openssl, valid for a day."""
    need(shutil.which("openssl") is not None, "openssl (for a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def poll_spec(voters: list[str], **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "title": "Where do we eat on Friday?",
        "choices": CHOICES,
        "voters": {"ids": voters},
        "noise": {"fakeVotes": {"distribution": "poisson", "mean": 2, "min": 1}},
        "mixing": {"minBatch": 10, "maxWait": "1s"},
        "duplicates": "prevent",
    }
    spec.update(changes)
    return spec


class System:
    """``privpoll up`` as a user starts it, pointed at the test's NATS and PostgreSQL.

    Every request of a test comes from one address, so the limit on wrong tokens and unknown
    polls (per address) is off unless a test sets ``PRIVPOLL_GUESS_RATE_LIMIT`` in ``env``.
    ``dsn``: a database of its own on the server, instead of the one the session's tests share.
    """

    def __init__(
        self,
        root: Path,
        nats: NatsServer,
        postgres: PostgresServer,
        env: dict[str, str] | None = None,
        dsn: str | None = None,
    ) -> None:
        self.root = root
        self.dsn = dsn or postgres.dsn
        self.extra_env = {"PRIVPOLL_GUESS_RATE_LIMIT": "off", **(env or {})}
        self.data = root / "data"
        self.nats = nats
        self.postgres = postgres
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        # Voters in threads vote as separate people do, each over a connection of their own
        # (one shared client once failed with EBADF under 32 threads).
        self._voter = threading.local()
        self._voter_clients: list[httpx.Client] = []
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "PRIVPOLL_DATA_DIR": str(self.data),
            "PRIVPOLL_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "PRIVPOLL_NATS_URL": self.nats.url,
            "PRIVPOLL_DATABASE_URL": self.dsn,
            "PRIVPOLL_ADMIN_TOKEN": ADMIN,
            "PRIVPOLL_PUBLISH_TIMEOUT": "2",
            **self.extra_env,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "up.log").open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "privpoll", "up"], env=env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"privpoll up exited:\n{self.output()}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"privpoll up did not get ready:\n{self.output()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()
        for client in self._voter_clients:
            client.close()

    def output(self) -> str:
        parts = [(self.root / "up.log").read_text(errors="replace")]
        for log in sorted((self.data / "logs").glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def logs(self) -> list[str]:
        """Every line any component wrote while the test ran."""
        files = [
            self.root / "up.log",
            *(self.data / "logs").glob("*.log"),
            self.nats.log_path,
            self.postgres.log_path,
        ]
        return [line for f in files if f.exists() for line in f.read_text().splitlines()]

    def child_pid(self, name: str) -> int | None:
        """The pid of a child of privpoll up, None while it is being restarted."""
        path = self.data / "run" / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def kill_child(self, name: str) -> int:
        pid = self.child_pid(name)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid

    def create_poll(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(
            "/api/v1/polls", json={"name": name, "spec": spec}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def invitations(self, name: str) -> dict[str, str]:
        response = self.http.get(f"/api/v1/polls/{name}/invitations", headers=self.admin)
        assert response.status_code == 200, response.text
        return {item["voter"]: item["token"] for item in response.json()}

    def vote(self, name: str, voter: str, token: str, choice: str) -> httpx.Response:
        client: httpx.Client | None = getattr(self._voter, "client", None)
        if client is None:
            client = self._voter.client = httpx.Client(base_url=self.url, timeout=30)
            self._voter_clients.append(client)
        return client.post(
            f"/api/v1/polls/{name}/votes", json={"voter": voter, "token": token, "choice": choice}
        )

    def close(self, name: str) -> None:
        response = self.http.post(f"/api/v1/polls/{name}/close", headers=self.admin)
        assert response.status_code == 200, response.text

    def wait_remixed(self, name: str, *, purged: bool = True, timeout: float = 90) -> None:
        """Until a closed poll is re-mixed (and, with ``purged``, its old rows, stream and
        voters bucket are gone): after that nothing more changes by itself."""
        deadline = time.monotonic() + timeout
        while True:
            with self.db() as conn:
                row = conn.execute(
                    "SELECT remixed, purged FROM polls WHERE name = %s", (name,)
                ).fetchone()
            if row is not None and row[0] and (row[1] or not purged):
                return
            assert time.monotonic() < deadline, f"poll {name} was not remixed:\n{self.output()}"
            time.sleep(0.3)

    def results(self, name: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/polls/{name}/results", headers=self.admin)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def db(self) -> psycopg.Connection[Any]:
        return storage.connect(self.dsn)

    def poll_uid(self, name: str) -> str:
        with self.db() as conn:
            row = conn.execute("SELECT uid FROM polls WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return str(row[0])

    def stored(self, name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(actors (entry, voter), ballots (id, choice)) of a poll, as the database holds them."""
        uid = self.poll_uid(name)
        with self.db() as conn:
            actors = conn.execute(
                "SELECT entry::text, voter FROM actors WHERE poll = %s", (uid,)
            ).fetchall()
            ballots = conn.execute(
                "SELECT id::text, choice FROM ballots WHERE poll = %s", (uid,)
            ).fetchall()
        return [(str(a), str(b)) for a, b in actors], [(str(a), str(b)) for a, b in ballots]

    def wait_stored(
        self, name: str, actors: int, ballots: int, timeout: float = 120
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.stored(name)
            if (len(found[0]), len(found[1])) == (actors, ballots):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"stored {len(found[0])} actors / {len(found[1])} ballots, "
                    f"expected {actors} / {ballots}\n{self.output()}"
                )
            time.sleep(0.5)


@pytest.fixture
def system(tmp_path: Path, nats: NatsServer, postgres: PostgresServer) -> Iterator[System]:
    running = System(tmp_path / "system", nats, postgres)
    running.start()
    yield running
    running.stop()


class Witness:
    """A third durable consumer the test adds to a poll's stream: it sees every envelope.

    With Interest retention the stream keeps each message until all consumers acked it, so
    the witness gets exactly what the sinks got. Only the test has it.
    """

    def __init__(self, nats_url: str, poll: str) -> None:
        self.nats_url = nats_url
        self.poll = poll
        asyncio.run(self._create())

    async def _create(self) -> None:
        nc = await naming.connect(self.nats_url, "witness")
        try:
            await nc.jetstream().add_consumer(
                naming.stream(self.poll), durable_name="witness", ack_policy="explicit"
            )
        finally:
            await nc.close()

    def envelopes(self) -> list[Envelope]:
        return asyncio.run(self._read())

    async def _read(self) -> list[Envelope]:
        nc = await naming.connect(self.nats_url, "witness")
        found: dict[str, Envelope] = {}
        try:
            sub = await nc.jetstream().pull_subscribe_bind(
                durable="witness", stream=naming.stream(self.poll)
            )
            while True:
                try:
                    messages = await sub.fetch(1000, timeout=1)
                except Exception:
                    break
                for msg in messages:
                    envelope = Envelope.decode(msg.data)
                    found[str(envelope.id)] = envelope
                    await msg.ack()
        finally:
            await nc.close()
        return list(found.values())


def fresh_database(postgres: PostgresServer, prefix: str) -> str:
    """A new, empty database on the shared server: another test's poll names never clash."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # a name made here, not input
    return make_conninfo(postgres.dsn, dbname=name)


def as_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except json.JSONDecodeError:
        return response.text
