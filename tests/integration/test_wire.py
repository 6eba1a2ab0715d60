"""The sinks' pull connection against a real nats-server: credentials, TLS, a restart."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import TypeVar

import pytest
from nats.js import api

from privpoll.bus import naming
from privpoll.bus.puller import Puller
from privpoll.bus.wire import Connection, Delivery, Refused
from privpoll.local.embedded import NatsServer
from tests.integration.waiting import acks_reached, eventually

T = TypeVar("T")


async def pull_one(url: str, publish_url: str | None = None) -> list[bytes]:
    """Through a pull connection to ``url``: a message published to a fresh stream, acked."""
    nc = await naming.connect(publish_url or url, "test")
    wire = Connection(url, "test-pulls")
    try:
        js = nc.jetstream()
        await js.add_stream(api.StreamConfig(name="s", subjects=["s"]))
        await js.add_consumer("s", api.ConsumerConfig(durable_name="c"))
        await js.publish("s", b"hello")
        await wire.open()
        puller = Puller(wire, "s", "c")
        await puller.start()
        got = await puller.fetch(10, timeout=5)
        assert wire.acknowledge(got)
        assert await acks_reached(js, "s", "c")
        return [d.data for d in got]
    finally:
        await wire.close()
        await nc.close()


def test_the_urls_user_and_password_are_presented(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", options=["--user", "sink", "--pass", "s3cret"])
    server.start()
    try:
        url = f"nats://sink:s3cret@127.0.0.1:{server.port}"
        assert asyncio.run(pull_one(url)) == [b"hello"]

        async def wrong() -> None:
            await Connection(f"nats://sink:wrong@127.0.0.1:{server.port}", "t").open()

        with pytest.raises(Refused, match="Authorization Violation"):
            asyncio.run(wrong())
    finally:
        server.stop()


def test_a_token_in_the_url_is_presented(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", options=["--auth", "T0KEN"])
    server.start()
    try:
        assert asyncio.run(pull_one(f"nats://T0KEN@127.0.0.1:{server.port}")) == [b"hello"]
    finally:
        server.stop()


def test_tls_is_used_and_the_certificate_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, localhost_certificate: tuple[Path, Path]
) -> None:
    cert, key = localhost_certificate
    server = NatsServer(
        tmp_path / "nats", options=["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    )
    server.start()
    try:
        url = f"tls://127.0.0.1:{server.port}"
        # Not trusted yet: the connection is refused, not made without checking.
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(Connection(url, "t").open())
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert asyncio.run(pull_one(url)) == [b"hello"]
        # A server that requires TLS gets it from a nats:// URL too.
        assert asyncio.run(pull_one(server.url, publish_url=url)) == [b"hello"]
    finally:
        server.stop()


def test_pulls_go_on_after_nats_restarts(nats: NatsServer) -> None:
    async def run() -> tuple[list[bytes], list[bytes], bool]:
        wire = Connection(nats.url, "test-pulls")
        await wire.open()
        nc = await naming.connect(nats.url, "test")
        try:
            js = nc.jetstream()
            await js.add_stream(api.StreamConfig(name="s", subjects=["s"]))
            await js.add_consumer("s", api.ConsumerConfig(durable_name="c"))
            await js.publish("s", b"before")
            puller = Puller(wire, "s", "c")
            await puller.start()
            before = await puller.fetch(10, timeout=5)
            wire.acknowledge(before)
            assert await acks_reached(js, "s", "c")
            nats.stop()
            await asyncio.sleep(0.5)
            connected_while_down = wire.connected
            nats.start()
            await eventually(lambda: js.publish("s", b"after"))

            async def pulled() -> list[Delivery]:
                got = await puller.fetch(10, timeout=1)
                if not got:
                    raise LookupError("nothing yet")
                return got

            after = await eventually(pulled)
            wire.acknowledge(after)
            return [d.data for d in before], [d.data for d in after], connected_while_down
        finally:
            await wire.close()
            await nc.close()

    before, after, connected_while_down = asyncio.run(run())
    assert before == [b"before"]
    assert not connected_while_down
    assert after == [b"after"], "the pull connection reconnected and subscribed again"
