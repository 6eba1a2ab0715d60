"""Three nats-servers on loopback with routes between them: a JetStream cluster, as the
chart's EKS values run it (streams and buckets keep three copies)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nats.js.api import ClusterInfo

from privpoll.bus import naming
from privpoll.local.embedded import NatsServer, free_port

NAME = "privpoll-test"


class NatsCluster:
    """``size`` nodes named n0, n1, ...; clients connect to ``url`` (n0) and learn the others
    from the servers, as a client in Kubernetes learns them behind the Service."""

    def __init__(self, root: Path, size: int = 3) -> None:
        routes = [free_port() for _ in range(size)]
        self.nodes: dict[str, NatsServer] = {}
        for i, port in enumerate(routes):
            others = ",".join(f"nats://127.0.0.1:{p}" for p in routes if p != port)
            options = [
                "--server_name", f"n{i}",
                "--cluster_name", NAME,
                "--cluster", f"nats://127.0.0.1:{port}",
                "--routes", others,
            ]  # fmt: skip
            self.nodes[f"n{i}"] = NatsServer(root / f"n{i}", options=options)

    @property
    def first(self) -> NatsServer:
        return self.nodes["n0"]

    @property
    def url(self) -> str:
        return self.first.url

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()
        self.wait_for_jetstream()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def wait_for_jetstream(self, timeout: float = 60) -> None:
        """Until every running node answers JetStream requests (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            if not node.running:
                continue
            while not asyncio.run(_answers(node.url)):
                assert time.monotonic() < deadline, f"no JetStream on {node.url}"
                time.sleep(0.5)

    def placement(self, stream: str) -> ClusterInfo:
        """Where the stream's copies are: its leader and its followers, by node name."""
        return asyncio.run(_placement(self._running_url(), stream))

    def wait_caught_up(self, streams: list[str], timeout: float = 120) -> float:
        """Until every copy of ``streams`` is current with no lag; returns the seconds waited."""
        started = time.monotonic()
        while True:
            try:
                infos = [self.placement(stream) for stream in streams]
            except Exception:
                infos = []
            if infos and all(_caught_up(info, len(self.nodes)) for info in infos):
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, f"copies never caught up: {infos}"
            time.sleep(0.5)

    def _running_url(self) -> str:
        return next(node.url for node in self.nodes.values() if node.running)


def _caught_up(info: ClusterInfo, size: int) -> bool:
    peers = info.replicas or []
    return (
        info.leader is not None
        and len(peers) == size - 1
        and all(p.current and not p.offline and not p.lag for p in peers)
    )


async def _answers(url: str) -> bool:
    try:
        nc = await naming.connect(url, "test")
    except Exception:
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


async def _placement(url: str, stream: str) -> ClusterInfo:
    nc = await naming.connect(url, "test")
    try:
        info = await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()
    found: ClusterInfo | None = info.cluster
    assert found is not None, f"{stream} is not clustered"
    return found
