"""The pull connection's reading of NATS frames: the same messages however the bytes come."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privpoll.bus.wire import Server, _Protocol

Frame = tuple[bytes, bytes, bytes, bytes]


def msg(subject: bytes, sid: int, reply: bytes, headers: bytes, data: bytes) -> bytes:
    """A frame as the protocol lays it out: MSG, or HMSG when there are headers."""
    to = b" " + reply if reply else b""
    if not headers:
        return b"MSG %s %d%s %d\r\n%s\r\n" % (subject, sid, to, len(data), data)
    total = len(headers) + len(data)
    return b"HMSG %s %d%s %d %d\r\n%s%s\r\n" % (
        subject,
        sid,
        to,
        len(headers),
        total,
        headers,
        data,
    )


# What nats-server sends a puller: INFO, a ping, messages with and without headers and
# replies, payloads holding the protocol's own separators, a status that ends a pull.
FRAMES: list[Frame] = [
    (b"votes.a", b"$JS.ACK.s.c.1.1.1.1.0", b"", b"hello"),
    (b"votes.a", b"$JS.ACK.s.c.1.2.2.1.0", b"NATS/1.0\r\nNats-Msg-Id: 1234\r\n\r\n", b"\r\nMSG "),
    (b"votes.b", b"", b"", b""),
    (b"_INBOX.x.0.3", b"", b"NATS/1.0 404 No Messages\r\n\r\n", b""),
]
STREAM = (
    b'INFO {"server_id":"x","headers":true}\r\n'
    + b"PING\r\n"
    + b"".join(
        msg(subject, 1, reply, headers, data) for subject, reply, headers, data in FRAMES[:3]
    )
    + b"+OK\r\n"
    + msg(b"_INBOX.x.0.3", 1, b"", b"NATS/1.0 404 No Messages\r\n\r\n", b"")
    + msg(b"elsewhere", 9, b"", b"", b"no")
)


class Recorder:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def deliver(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        self.frames.append((subject, reply, headers, data))

    def lost(self) -> None:
        pass


class Written(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += bytes(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return False


def read(chunks: list[bytes]) -> tuple[list[Frame], bytes, bool]:
    async def run() -> tuple[list[Frame], bytes, bool]:
        recorder = Recorder()
        protocol = _Protocol({1: (b"votes.>", recorder)})
        written = Written()
        protocol.connection_made(written)
        for chunk in chunks:
            protocol.data_received(chunk)
        await asyncio.sleep(0)  # what was written goes out at the end of the loop's turn
        return recorder.frames, written.data, protocol.info.done()

    return asyncio.run(run())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_frames_split_anywhere_read_the_same(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    frames, written, informed = read(chunks)
    assert frames == FRAMES, "every message of subscription 1 once, whole; none of sid 9"
    assert written == b"PONG\r\n", "a PING from the server is answered"
    assert informed


def test_every_byte_on_its_own_reads_the_same() -> None:
    frames, _, _ = read([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert frames == FRAMES


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222", Server("127.0.0.1", 4222, False, None, None, None)),
        ("nats://nats", Server("nats", 4222, False, None, None, None)),
        ("tls://nats.example:4443", Server("nats.example", 4443, True, None, None, None)),
        ("nats://sink:s%40cret@nats:4222", Server("nats", 4222, False, "sink", "s@cret", None)),
        ("nats://T0KEN@nats", Server("nats", 4222, False, None, None, "T0KEN")),
    ],
)
def test_a_url_gives_the_server_and_its_credentials(url: str, expected: Server) -> None:
    assert Server.from_url(url) == expected


def test_a_url_of_another_transport_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="nats:// or tls://"):
        Server.from_url("ws://nats:8080")


def test_frames_written_in_one_turn_of_the_loop_go_out_in_one_write() -> None:
    async def run() -> tuple[bytes, int]:
        protocol = _Protocol({})
        written = Written()
        protocol.connection_made(written)
        for i in range(3):
            protocol.write(b"PUB s %d\r\n" % i)
        await asyncio.sleep(0)
        protocol.write(b"PUB s 3\r\n")
        await asyncio.sleep(0)
        return written.data, written.writes

    data, writes = asyncio.run(run())
    assert data == b"PUB s 0\r\nPUB s 1\r\nPUB s 2\r\nPUB s 3\r\n", "in order, none lost"
    assert writes == 2, "one write for the first turn's three frames, one for the next"
