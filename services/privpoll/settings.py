"""The one settings object, read from the environment (``PRIVPOLL_*``)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|m|h)\s*$")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
OFF = ("", "0", "off")


@dataclass(frozen=True)
class Rate:
    """``count`` requests per ``period`` seconds, all of them at once if need be."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """``60/m``, ``5/s`` or ``100/h``; ``off`` (or ``0``) means no limit."""
        if text.strip().lower() in OFF:
            return None
        match = _RATE.match(text)
        if not match or int(match.group(1)) == 0:
            raise ValueError(f"{text!r} is not a rate: write e.g. 60/m, 5/s, 100/h or off")
        return cls(int(match.group(1)), _PERIODS[match.group(2)])


class Settings(BaseModel):
    data_dir: Path = Path(".privpoll")
    # Where ``privpoll up`` keeps what must not travel with a copy of the data folder (the
    # admin token, the HMAC key, the queue's encryption key); empty: a sibling of the data
    # folder named ``<data folder>-secrets`` (privpoll.local.secrets).
    secrets_dir: Path | None = None
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
    # latency at the same load: bench/analysis.md). gthread: request threads,
    # ``ingest_threads`` of them per worker.
    ingest_worker_class: Literal["gevent", "gthread"] = "gevent"
    ingest_threads: int = 16
    publish_timeout: float = 5.0
    # Slow clients (privpoll.web.slow_clients): seconds for a request's headers to arrive (the
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
    database_ca_dir: str = Field(
        default="/etc/privpoll/database-ca",
        description="where the sinks mount it: the folder the DSN's sslrootcert names",
    )
    # The sink containers' resources, as JSON (the chart's operator.sinkResources).
    sink_resources: str = (
        '{"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}'
    )
    # A poll's sink Deployment goes to zero replicas once its consumer has had nothing new for
    # this long, and back to one when an envelope waits (privpoll_operator.idle); 0: never.
    sink_idle_seconds: float = Field(default=300.0, ge=0)
    # Per client address and per ingest worker process (ratelimit.py): wrong vote tokens and
    # unknown polls, and wrong admin tokens (sign-in page and API). Valid votes are never
    # limited per address. "60/m", "5/s", "100/h" or "off".
    guess_rate_limit: str = "60/m"
    signin_rate_limit: str = "10/m"
    # All votes to one poll, per ingest worker process: "off", or a ceiling far above any
    # electorate's rate (e.g. "2000/s") against a flood of valid votes.
    poll_vote_ceiling: str = "off"
    # Where a sink serves its own /metrics ("host:port"; empty: nowhere;
    # privpoll.workers.sink_metrics). Under privpoll up the actors sink takes this port and the
    # ballots sink the next one.
    sink_metrics_addr: str = ""
    # E-mail to voters (invitations and reminders): smtp://[user:password@]host:port, with
    # STARTTLS when the server offers it, or smtps:// for TLS from the start. Empty: no e-mail.
    smtp_url: str = Field(default="", repr=False)
    mail_from: str = Field(default="", description="the From of voters' e-mail")
    # Proxies in front of the ingest whose X-Forwarded-For names the client (an ingress: 1).
    proxy_hops: int = Field(default=0, ge=0, le=5)

    @field_validator("sink_resources")
    @classmethod
    def _resources(cls, value: str) -> str:
        try:
            found = json.loads(value)
        except ValueError as error:
            raise ValueError(f"sink resources must be JSON ({error})") from error
        if not isinstance(found, dict) or set(found) - {"requests", "limits"}:
            raise ValueError('sink resources are {"requests": {...}, "limits": {...}}')
        return value

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
