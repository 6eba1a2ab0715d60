"""Slow clients: 500 connections sending a byte every few seconds hold nothing for long, and
voters are still answered within a second while they trickle."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from privpoll.local.embedded import NatsServer, PostgresServer
from privpoll.settings import Settings
from tests.integration.conftest import System, poll_spec

SLOW = int(os.environ.get("PRIVPOLL_SLOW_CLIENTS", "500"))
TRICKLE = 2.0  # seconds between two bytes of a slow client
VOTERS = [f"voter-{i:04d}" for i in range(400)]


@dataclass
class Slow:
    sock: socket.socket
    rest: bytes
    opened: float
    closed: float | None = None
    answer: bytes = b""


@pytest.fixture
def served(tmp_path: Path, nats: NatsServer, postgres: PostgresServer) -> Iterator[System]:
    running = System(tmp_path / "system", nats, postgres)
    running.start()
    yield running
    running.stop()


def _open(port: int, slow_headers: bool) -> Slow:
    body = b'{"voter": "voter-0000", "token": "forged", "choice": "pizza"}'
    head = (
        b"POST /api/v1/polls/slow/votes HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if slow_headers:
        rest = head + body
    else:
        sock.sendall(head)
        rest = body
    sock.setblocking(False)
    return Slow(sock, rest, time.monotonic())


def trickle(clients: list[Slow], stop: threading.Event) -> None:
    """A byte to every open connection each TRICKLE seconds; note when the server answers
    or hangs up."""
    selector = selectors.DefaultSelector()
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    next_byte = time.monotonic() + TRICKLE
    while not stop.is_set() and selector.get_map():
        for key, _ in selector.select(timeout=0.2):
            client = key.data
            try:
                data = client.sock.recv(4096)
            except OSError:
                data = b""
            client.answer += data
            if not data:
                client.closed = time.monotonic()
                selector.unregister(client.sock)
                client.sock.close()
        if time.monotonic() >= next_byte:
            next_byte += TRICKLE
            for key in list(selector.get_map().values()):
                client = key.data
                if client.rest:
                    try:
                        client.sock.send(client.rest[:1])
                        client.rest = client.rest[1:]
                    except OSError:
                        pass
    for key in list(selector.get_map().values()):
        key.data.sock.close()


def test_slow_clients_are_cut_off_and_voters_still_answered(served: System) -> None:
    system = served
    settings = Settings()
    system.create_poll("slow", poll_spec(VOTERS))
    tokens = system.invitations("slow")
    clients = [_open(system.port, slow_headers=i % 2 == 0) for i in range(SLOW)]
    stop = threading.Event()
    trickling = threading.Thread(target=trickle, args=(clients, stop))
    trickling.start()
    latencies = []
    statuses: Counter[int] = Counter()
    try:
        # Voters vote one after another while every slow connection is open.
        for voter in VOTERS:
            started = time.monotonic()
            statuses[system.vote("slow", voter, tokens[voter], "sushi").status_code] += 1
            latencies.append(time.monotonic() - started)
            if all(c.closed for c in clients):
                break
        held = sum(1 for c in clients if c.closed is None)
        # Then every slow connection ends, cut off by the server.
        bound = settings.header_timeout * 2 + settings.body_timeout + 30
        deadline = time.monotonic() + bound
        while any(c.closed is None for c in clients) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        trickling.join()
    median = sorted(latencies)[len(latencies) // 2]
    open_for = [c.closed - c.opened for c in clients if c.closed is not None]
    body_clients = clients[1::2]
    timed_out = sum(1 for c in body_clients if c.answer.startswith(b"HTTP/1.1 408"))
    print(
        f"\n{SLOW} slow connections (a byte every {TRICKLE:g} s): {len(open_for)} cut off by the "
        f"server, after {min(open_for, default=0):.1f}-{max(open_for, default=0):.1f} s; "
        f"{timed_out} of {len(body_clients)} slow bodies answered 408. While {held} were held: "
        f"{sum(statuses.values())} votes {dict(statuses)}, slowest answer "
        f"{max(latencies) * 1000:.0f} ms, median {median * 1000:.0f} ms"
    )
    assert statuses == {202: len(latencies)}
    assert max(latencies) < 1.0, "a vote waited a second behind the slow clients"
    assert len(open_for) == SLOW, "every slow connection is cut off by the server"
    assert timed_out == len(body_clients), "a body that does not come gets 408"
    header_clients = clients[::2]
    assert not [c for c in header_clients if c.answer], "slow headers: closed, no answer"
