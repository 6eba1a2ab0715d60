"""A provisioned poll: its name, random uid, rules and where it stands in its life."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from privpoll.core.spec import PollRules


class Phase(StrEnum):
    PENDING = "Pending"
    OPEN = "Open"
    CLOSED = "Closed"


class Poll(BaseModel):
    """What the poll registry (a NATS KV bucket) holds; no voter list, only its size.

    The ingest needs no voter list: a voter token is an HMAC over (uid, voter) that only the
    invitations hand out, so a valid token proves eligibility.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    uid: uuid.UUID
    rules: PollRules
    eligible: int
    closed: bool = False

    def phase(self, now: datetime | None = None) -> Phase:
        now = now or datetime.now(UTC)
        schedule = self.rules.schedule
        if self.closed or (schedule.closes_at is not None and now >= schedule.closes_at):
            return Phase.CLOSED
        if schedule.opens_at is not None and now < schedule.opens_at:
            return Phase.PENDING
        return Phase.OPEN

    def to_registry(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_registry(cls, data: bytes) -> Poll:
        return cls.model_validate_json(data)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": str(self.uid),
            "phase": self.phase().value,
            "spec": self.rules.to_document(),
            "eligibleVoters": self.eligible,
        }
