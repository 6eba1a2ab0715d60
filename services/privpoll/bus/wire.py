"""A lean NATS connection for the sinks' pulls and acks and the ingest's publishes: the
protocol's frames read by hand.

nats-py turns every delivered message into a ``Msg`` through its parser, a parse of its
headers, a queue and a task, and sends each ack as a publish of its own: draining a backlog,
that cost more than everything else a sink does with an envelope. This connection splits the
frames itself and writes a batch's acks as one buffer (bench/analysis.md has the
measurements).

The ingest publishes its reservations and envelopes over one too (``publisher.Publisher``):
a publish is a frame added to the connection's buffer, which goes out once per turn of the
event loop, and its ack one frame read back.

It speaks only what those need: SUB, UNSUB, PUB and HPUB, MSG and HMSG, PING and PONG; the
credentials a URL carries (``nats://user:password@host`` or ``nats://token@host``) and TLS
(``tls://``, or when the server requires it); and it reconnects, for as long as the process
lives, the way ``messaging.connect`` does. Everything else asked of NATS (the registry,
stream and consumer info, the KV bucket's reads) goes through nats-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from privpoll.core import randomness

log = logging.getLogger(__name__)

DEFAULT_PORT = 4222
CONNECT_TIMEOUT = 2.0
RECONNECT_WAIT = 0.5
# A PING this often; a connection that left two unanswered is taken for dead.
PING_EVERY = 10.0
MAX_PINGS_OUT = 2

# What an ack says (JetStream's acknowledgement bodies).
ACK = b"+ACK"
IN_PROGRESS = b"+WPI"
TERMINATE = b"+TERM"

_CRLF = b"\r\n"


class Subscriber(Protocol):
    def deliver(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        """One message, as the server framed it (``headers`` empty for a MSG)."""

    def lost(self) -> None:
        """The connection went away: whatever was asked of it will not be answered."""


@dataclass(slots=True)
class Delivery:
    """A message delivered by a pull: its payload and the subject its ack goes to."""

    reply: bytes
    data: bytes


class Refused(ConnectionError):
    """nats-server refused the connection (e.g. its credentials) or sent -ERR."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    tls: bool
    user: str | None
    password: str | None
    token: str | None

    @classmethod
    def from_url(cls, url: str) -> Server:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        if parts.scheme not in ("nats", "tls"):
            raise ValueError(f"NATS URL {url!r}: the sinks reach NATS over nats:// or tls://")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or DEFAULT_PORT,
            tls=parts.scheme == "tls",
            user=user if password is not None else None,
            password=password,
            token=user if password is None else None,
        )


class Connection:
    """One connection of a process: a sink's, shared by the pullers of all its polls, or an
    ingest worker's, shared by all its request threads' publishes."""

    def __init__(self, url: str, name: str) -> None:
        self.server = Server.from_url(url)
        self.name = name
        self._inbox = f"_INBOX.{randomness.new_id().hex}"
        self._inboxes = 0
        self._subscriptions: dict[int, tuple[bytes, Subscriber]] = {}
        self._sids = 0
        self._protocol: _Protocol | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> None:
        """Connect (raises when nats-server cannot be reached or refuses), then keep the
        connection: reconnect whenever it is lost, until ``close``."""
        self._protocol = await self._connect()
        self._keeper = asyncio.create_task(self._keep())

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._protocol is not None:
            self._protocol.close()

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.usable

    def new_inbox(self) -> str:
        """A reply subject prefix of this connection that no other caller gets."""
        self._inboxes += 1
        return f"{self._inbox}.{self._inboxes}"

    def subscribe(self, subject: str, subscriber: Subscriber) -> int:
        """Deliver what comes on ``subject`` to ``subscriber``, on this connection and on
        every one after a reconnect."""
        self._sids += 1
        self._subscriptions[self._sids] = (subject.encode(), subscriber)
        if self.connected:
            self._write(b"SUB %s %d\r\n" % (subject.encode(), self._sids))
        return self._sids

    def unsubscribe(self, sid: int) -> None:
        if self._subscriptions.pop(sid, None) is not None and self.connected:
            self._write(b"UNSUB %d\r\n" % sid)

    def publish(self, subject: str, payload: bytes, reply: str, headers: bytes = b"") -> None:
        """Send ``payload`` (with ``headers``, a whole NATS/1.0 header block, if any); raises
        ConnectionError while there is no connection (nothing is buffered)."""
        if not self.connected:
            raise ConnectionError("not connected to NATS")
        if headers:
            self._write(
                b"HPUB %s %s %d %d\r\n%s%s\r\n"
                % (
                    subject.encode(), reply.encode(), len(headers), len(headers) + len(payload),
                    headers, payload,
                )
            )  # fmt: skip
        else:
            self._write(
                b"PUB %s %s %d\r\n%s\r\n"
                % (subject.encode(), reply.encode(), len(payload), payload)
            )

    def acknowledge(self, deliveries: Iterable[Delivery], body: bytes = ACK) -> bool:
        """One buffer of acks (or in-progress, or terminate) for these deliveries. Without a
        connection they are dropped and False returned: JetStream redelivers what was not
        acked, and a redelivered envelope stored already changes nothing."""
        if not self.connected:
            return False
        head = b" %d\r\n%s\r\n" % (len(body), body)
        self._write(b"".join([b"PUB " + d.reply + head for d in deliveries]))
        return True

    def _write(self, data: bytes) -> None:
        assert self._protocol is not None
        self._protocol.write(data)

    async def _connect(self) -> _Protocol:
        server = self.server
        loop = asyncio.get_running_loop()
        protocol = _Protocol(self._subscriptions)
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: protocol, server.host, server.port), CONNECT_TIMEOUT
        )
        try:
            info = await asyncio.wait_for(protocol.info, CONNECT_TIMEOUT)
            tls = server.tls or bool(info.get("tls_required"))
            if tls:
                upgraded = await loop.start_tls(
                    transport, protocol, ssl.create_default_context(), server_hostname=server.host
                )
                if upgraded is None:
                    raise ConnectionError("TLS with NATS failed")
                protocol.transport = upgraded
            hello: dict[str, Any] = {
                "verbose": False,
                "pedantic": False,
                "tls_required": tls,
                "name": self.name,
                "lang": "python",
                "version": "privpoll",
                "protocol": 1,
                "headers": True,
                "no_responders": True,
            }
            if server.user is not None:
                hello["user"], hello["pass"] = server.user, server.password
            elif server.token is not None:
                hello["auth_token"] = server.token
            subscriptions = b"".join(
                b"SUB %s %d\r\n" % (subject, sid)
                for sid, (subject, _) in self._subscriptions.items()
            )
            hello_line = b"CONNECT %s\r\nPING\r\n" % json.dumps(hello).encode()
            protocol.write(hello_line + subscriptions)
            await asyncio.wait_for(protocol.pong, CONNECT_TIMEOUT)
        # A half-open connection is closed on any failure, a cancellation included.
        except BaseException:
            protocol.close()
            raise
        protocol.ready = True
        return protocol

    async def _keep(self) -> None:
        """Ping while connected; once the connection is lost, connect again until it works."""
        while not self._closed:
            protocol = self._protocol
            if protocol is not None and protocol.usable:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(protocol.gone), PING_EVERY)
                if protocol.usable:
                    if protocol.pings_out >= MAX_PINGS_OUT:
                        log.warning("NATS stopped answering PINGs; reconnecting")
                        protocol.close()
                    else:
                        protocol.ping()
                continue
            self._protocol = None
            try:
                self._protocol = await self._connect()
                log.info("pull connection to NATS back")
            # Refused, reset, TLS, timeouts: all mean "not back yet".
            except Exception as error:
                log.debug("cannot reach NATS yet (%s)", type(error).__name__)
                await asyncio.sleep(RECONNECT_WAIT)


class _Protocol(asyncio.Protocol):
    """The frames of one connection, split as they come."""

    def __init__(self, subscriptions: dict[int, tuple[bytes, Subscriber]]) -> None:
        loop = asyncio.get_running_loop()
        self.subscriptions = subscriptions
        self.transport: asyncio.BaseTransport | None = None
        self.info: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.pong: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.ready = False
        self.pings_out = 0
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []

    @property
    def usable(self) -> bool:
        return self.ready and not self.gone.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError("the connection to NATS was lost")
        for waiting in (self.info, self.pong):
            if not waiting.done():
                waiting.set_exception(error)
                waiting.exception()  # raised to whoever awaits it; no warning if none does
        if not self.gone.done():
            self.gone.set_result(None)
            if self.ready:
                for _, subscriber in list(self.subscriptions.values()):
                    subscriber.lost()

    def write(self, data: bytes) -> None:
        """Send ``data`` with everything else written in this turn of the event loop."""
        self._outgoing.append(data)
        if len(self._outgoing) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(data)

    def ping(self) -> None:
        self.pings_out += 1
        self.write(b"PING\r\n")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        position = 0
        subscriptions = self.subscriptions
        while True:
            end = buffer.find(_CRLF, position)
            if end < 0:
                break
            line = bytes(buffer[position:end])
            start = end + 2
            if line.startswith(b"HMSG ") or line.startswith(b"MSG "):
                fields = line.split(b" ")
                headed = fields[0] == b"HMSG"
                total = int(fields[-1])
                if start + total + 2 > size:
                    break  # the rest of this message has not come yet
                header_size = int(fields[-2]) if headed else 0
                reply = fields[3] if len(fields) == (6 if headed else 5) else b""
                position = start + total + 2
                found = subscriptions.get(int(fields[2]))
                if found is not None:
                    found[1].deliver(
                        fields[1],
                        reply,
                        bytes(buffer[start : start + header_size]),
                        bytes(buffer[start + header_size : start + total]),
                    )
                continue
            position = start
            self._control(line)
        del buffer[:position]

    def _control(self, line: bytes) -> None:
        if line == b"PING":
            self.write(b"PONG\r\n")
        elif line == b"PONG":
            self.pings_out = 0
            if not self.pong.done():
                self.pong.set_result(None)
        elif line.startswith(b"INFO "):
            if not self.info.done():
                try:
                    self.info.set_result(json.loads(line[5:]))
                except ValueError:
                    self.info.set_exception(Refused("nats-server sent an unreadable INFO"))
        elif line.startswith(b"-ERR"):
            message = line[4:].strip().strip(b"'").decode(errors="replace")
            if not self.pong.done():
                self.pong.set_exception(Refused(f"nats-server refused the connection: {message}"))
            else:
                log.warning("nats-server: %s", message)
