"""The one settings object, read from the environment (``PRIVPOLL_*``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from privpoll.service.ratelimit import Rate


class Settings(BaseModel):
    data_dir: Path = Path(".privpoll")
    http_addr: str = "127.0.0.1:8000"
    public_url: str = ""
    admin_token: str = ""
    secret: str = Field(default="", description="HMAC key of voter tokens")
    nats_url: str = ""
    database_url: str = ""
    log_level: str = "INFO"
    ingest_workers: int = 2
    # gevent: each worker serves its requests in greenlets on one thread, with its NATS loop
    # among them (no handover of the GIL between request threads: more votes/s and a lower
    # latency at the same load, measured in bench/analysis.md). gthread: request threads,
    # ``ingest_threads`` of them per worker.
    ingest_worker_class: Literal["gevent", "gthread"] = "gevent"
    ingest_threads: int = 16
    publish_timeout: float = 5.0
    # Slow clients (privpoll.slow_clients): seconds for a request's headers to arrive (the
    # gevent worker's keep-alive timeout, also how long an idle connection stays open), and
    # for its body, counted from the end of its headers.
    header_timeout: int = Field(default=5, ge=1)
    body_timeout: float = Field(default=10.0, ge=0)
    stream_replicas: int = 1
    # Who provisions a poll created through the API: the ingest itself ("local"), or the
    # operator, for which the API creates a Poll resource in `namespace` ("kubernetes").
    control_plane: Literal["local", "kubernetes"] = "local"
    namespace: str = "default"
    # The operator's view of the sinks it deploys (Kubernetes only).
    sink_image: str = "privpoll:latest"
    sink_nats_url: str = Field(default="", description="NATS URL as the sink pods see it")
    database_secret: str = Field(default="", description="'secret:key' holding the sinks' DSN")
    database_ca_secret: str = Field(
        default="", description="Secret whose ca.crt the sinks mount (a DSN with sslrootcert)"
    )
    # Per client address and per ingest worker process (ratelimit.py): wrong vote tokens and
    # unknown polls, and wrong admin tokens (sign-in page and API). Valid votes are never
    # limited per address. "60/m", "5/s", "100/h" or "off".
    guess_rate_limit: str = "60/m"
    signin_rate_limit: str = "10/m"
    # All votes to one poll, per ingest worker process: "off", or a ceiling far above any
    # electorate's rate (e.g. "2000/s") against a flood of valid votes.
    poll_vote_ceiling: str = "off"
    # Where a sink serves its own /metrics ("host:port"; empty: nowhere; privpoll.sink_metrics).
    # Under privpoll up the actors sink takes this port and the ballots sink the next one.
    sink_metrics_addr: str = ""
    # Proxies in front of the ingest whose X-Forwarded-For names the client (an ingress: 1).
    proxy_hops: int = Field(default=0, ge=0, le=5)

    @field_validator("guess_rate_limit", "signin_rate_limit", "poll_vote_ceiling")
    @classmethod
    def _rate(cls, value: str) -> str:
        Rate.parse(value)
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {
            name: env[f"PRIVPOLL_{name.upper()}"]
            for name in cls.model_fields
            if f"PRIVPOLL_{name.upper()}" in env
        }
        return cls.model_validate(values)

    def to_env(self) -> dict[str, str]:
        """The environment that gives a child process these same settings."""
        return {
            f"PRIVPOLL_{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value not in ("", None)
        }

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_addr}").rstrip("/")

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode()
