"""The poll creation form: what a person types, turned into the API's body (and back).

Pure: no Flask, no I/O. The page validates the body with the same model as the API and
shows the API's messages next to the fields they are about (``field_of``).
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from privpoll.core.noise import epsilon as epsilon_of
from privpoll.core.results import expected_margin
from privpoll.core.spec import MAX_CHOICES, RECOMMENDED_EPSILON

HEADER_NAMES = {"voter", "voters", "voter id", "voter_id", "voterid", "id", "email", "e-mail"}
NOT_SET = ""


@dataclass(frozen=True)
class Preset:
    """A privacy level: noise settings, and what they mean in plain words."""

    label: str
    meaning: str
    distribution: str
    fake: str
    fake_min: str
    fake_max: str
    randomized: bool
    epsilon: str


PRESETS: dict[str, Preset] = {
    "low": Preset(
        label="Low privacy, most accurate",
        meaning=(
            "Every vote is stored beside exactly one fake vote. Someone who steals the "
            "database cannot be sure how anyone voted, but a guess is right fairly often."
        ),
        distribution="fixed",
        fake="1",
        fake_min="1",
        fake_max="",
        randomized=False,
        epsilon="2",
    ),
    "medium": Preset(
        label="Medium privacy (recommended)",
        meaning=(
            "Every vote hides among a random number of fake votes (at least one, two on "
            "average), and before it is stored its choice is swapped for a random one now and "
            "then (randomized response, ε = 2.5): even with the database and the list of who "
            "voted, the odds that a voter chose one answer rather than another are at most "
            "e^2.5 ≈ 12 to 1. This is what a poll gets when it says nothing about noise."
        ),
        distribution="poisson",
        fake="2",
        fake_min="1",
        fake_max="",
        randomized=True,
        epsilon=f"{RECOMMENDED_EPSILON:g}",
    ),
    "high": Preset(
        label="High privacy",
        meaning=(
            "More fake votes (three on average) and more swapping (ε = 1.5): the odds for any "
            "voter are at most e^1.5 ≈ 4.5 to 1. The results need a few hundred voters to be "
            "useful."
        ),
        distribution="poisson",
        fake="3",
        fake_min="1",
        fake_max="",
        randomized=True,
        epsilon="1.5",
    ),
}
DEFAULT_PRIVACY = "medium"
CUSTOM = "custom"

# Where the API's field paths (pydantic locations, camelCase) show up on the form.
_FIELDS: list[tuple[str, str]] = [
    ("name", "name"),
    ("spec.title", "title"),
    ("spec.choices", "choices"),
    ("spec.voters", "voters"),
    ("spec.schedule.opensAt", "opensAt"),
    ("spec.schedule.closesAt", "closesAt"),
    ("spec.schedule", "closesAt"),
    ("spec.noise", "noise"),
    ("spec.mixing.minBatch", "minBatch"),
    ("spec.mixing.maxWait", "maxWait"),
    ("spec.mixing", "minBatch"),
    ("spec.duplicates", "duplicates"),
    ("spec.results", "visibility"),
]
GENERAL = "form"


def field_of(path: str, message: str) -> str:
    """The form field an API problem is about; whole-body problems name it first."""
    for prefix, name in _FIELDS:
        if path == prefix or path.startswith(prefix + "."):
            return name
    for prefix, name in _FIELDS:
        if message.startswith(prefix + " ") or message.startswith(prefix + ":"):
            return name
    return GENERAL


class VoterListError(ValueError):
    pass


def parse_voters(text: str) -> list[str]:
    """Voter ids from a pasted list or a CSV file: one voter per line.

    With a header row (first column ``voter``, ``id`` or ``email``) the voter id is the
    first column and other columns, such as names, are ignored; without one, a line holding
    several values is a mistake (a list pasted across one line, or a wrong separator).
    """
    if "\x00" in text:
        raise VoterListError("the list holds binary data (a NUL byte): upload a CSV text file")
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = ";" if ";" in first and "," not in first else "\t" if "\t" in first else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    found: list[str] = []
    header = False
    try:
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if not found and not header and cells[0].lower() in HEADER_NAMES:
                header = True
                continue
            values = [cell for cell in cells if cell]
            if not cells[0]:
                raise VoterListError(
                    f"line {reader.line_num}: the first column (the voter id) is empty"
                )
            if len(values) > 1 and not header:
                raise VoterListError(
                    f"line {reader.line_num} holds {len(values)} values "
                    f"({', '.join(values[:3])}): put one voter id per line, or start the "
                    f"file with a header row whose first column is 'voter'"
                )
            found.append(cells[0])
    except csv.Error as error:
        raise VoterListError(
            f"line {reader.line_num} is not valid CSV ({error}): is a quote left open?"
        ) from error
    return found


def decode_upload(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise VoterListError(
            "the file is not UTF-8 text: save it as 'CSV UTF-8' and upload it again"
        ) from error


def slug(title: str) -> str:
    """A poll name (for links) from a title: 'Où manger ?' becomes 'ou-manger'."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return words[:40].rstrip("-") or "poll"


def parse_local_time(text: str, utc_offset_minutes: int) -> str:
    """An ISO time with zone from a ``datetime-local`` value typed at that UTC offset."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise ValueError(
            f"{text!r} is not a date and time: write it as 2026-12-01T12:00"
        ) from error
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone(timedelta(minutes=utc_offset_minutes)))
    return value.isoformat()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Preview:
    """What the privacy / accuracy panel shows before the poll is saved."""

    voters: int
    choices: int
    margin: float | None
    p: float | None
    epsilon: float | None

    @property
    def margin_share(self) -> float | None:
        if self.margin is None or not self.voters:
            return None
        return self.margin / self.voters


@dataclass(frozen=True)
class PollForm:
    """The creation form as typed: every value a string, kept to show it again."""

    name: str = ""
    title: str = ""
    choices: tuple[str, ...] = ("", "", "")
    voters: str = ""
    opens_at: str = ""
    closes_at: str = ""
    utc_offset: str = "0"
    duplicates: str = "prevent"
    visibility: str = "live"
    privacy: str = DEFAULT_PRIVACY
    distribution: str = PRESETS[DEFAULT_PRIVACY].distribution
    fake: str = PRESETS[DEFAULT_PRIVACY].fake
    fake_min: str = PRESETS[DEFAULT_PRIVACY].fake_min
    fake_max: str = PRESETS[DEFAULT_PRIVACY].fake_max
    randomized: bool = PRESETS[DEFAULT_PRIVACY].randomized
    epsilon: str = PRESETS[DEFAULT_PRIVACY].epsilon
    min_batch: str = "10"
    max_wait: str = "30s"
    problems: Mapping[str, list[str]] = field(default_factory=dict)

    @classmethod
    def submitted(
        cls, get: Callable[[str], str | None], choices: list[str], upload: str | None = None
    ) -> PollForm:
        """The form from a POST: ``get`` reads one field, ``upload`` is a voters file's text."""

        def text(key: str, default: str = "") -> str:
            return (get(key) or default).strip()

        form = cls(
            name=text("name"),
            title=text("title"),
            choices=tuple(c.strip() for c in choices) or ("", ""),
            voters=(get("voters") or "").strip(),
            opens_at=text("opensAt"),
            closes_at=text("closesAt"),
            utc_offset=text("utcOffset", "0"),
            duplicates=text("duplicates", "prevent"),
            visibility=text("visibility", "live"),
            privacy=text("privacy", DEFAULT_PRIVACY),
            distribution=text("distribution", "poisson"),
            fake=text("fake"),
            fake_min=text("fakeMin"),
            fake_max=text("fakeMax"),
            randomized=get("randomized") is not None,
            epsilon=text("epsilon"),
            min_batch=text("minBatch", "10"),
            max_wait=text("maxWait", "30s"),
        )
        if form.privacy in PRESETS:
            form = form.with_preset(form.privacy)
        if upload is not None and upload.strip():
            try:
                added = parse_voters(upload)
            except VoterListError as error:
                return form.with_problems({"voters": [f"the uploaded file: {error}"]})
            pasted = form.voters.rstrip("\n")
            form = replace(form, voters="\n".join([pasted, *added] if pasted else added))
        return form

    def with_preset(self, privacy: str) -> PollForm:
        preset = PRESETS[privacy]
        return replace(
            self,
            privacy=privacy,
            distribution=preset.distribution,
            fake=preset.fake,
            fake_min=preset.fake_min,
            fake_max=preset.fake_max,
            randomized=preset.randomized,
            epsilon=preset.epsilon,
        )

    def with_problems(self, found: Mapping[str, list[str]]) -> PollForm:
        merged: dict[str, list[str]] = {k: list(v) for k, v in self.problems.items()}
        for key, messages in found.items():
            for message in messages:
                if message not in merged.setdefault(key, []):
                    merged[key].append(message)
        return replace(self, problems=merged)

    def add_choice(self) -> PollForm:
        if len(self.choices) >= MAX_CHOICES:
            return self
        return replace(self, choices=(*self.choices, ""))

    def remove_choice(self, index: int) -> PollForm:
        if len(self.choices) <= 2 or not 0 <= index < len(self.choices):
            return self
        return replace(self, choices=self.choices[:index] + self.choices[index + 1 :])

    @property
    def derived_name(self) -> bool:
        return not self.name

    def poll_name(self, attempt: int = 1) -> str:
        """The name typed, else one made from the title (``-2``, ``-3``... if taken)."""
        if self.name:
            return self.name
        base = slug(self.title)
        if attempt == 1:
            return base
        suffix = f"-{attempt}"
        return base[: 40 - len(suffix)].rstrip("-") + suffix

    def _offset(self) -> int:
        try:
            minutes = int(self.utc_offset)
        except ValueError:
            return 0
        return minutes if -18 * 60 <= minutes <= 18 * 60 else 0

    def _fake_votes(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"distribution": self.distribution}
        if self.distribution == "fixed":
            shape["count"] = self.fake
            shape["min"] = self.fake
        elif self.distribution == "uniform":
            shape["min"] = self.fake_min
            shape["max"] = self.fake_max
        else:
            shape["mean"] = self.fake
            shape["min"] = self.fake_min
        return {k: v for k, v in shape.items() if v != NOT_SET}

    def body(self, attempt: int = 1) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """The API body ``{name, spec}`` and the problems found before the API sees it."""
        found: dict[str, list[str]] = {}
        try:
            voters = parse_voters(self.voters)
        except VoterListError as error:
            found["voters"] = [str(error)]
            voters = ["-"]  # keeps the API's check of the other fields going
        schedule: dict[str, str] = {}
        for key, text in (("opensAt", self.opens_at), ("closesAt", self.closes_at)):
            if text:
                try:
                    schedule[key] = parse_local_time(text, self._offset())
                except ValueError as error:
                    found[key] = [str(error)]
        noise: dict[str, Any] = {"fakeVotes": self._fake_votes()}
        if self.randomized:
            noise["randomizedResponse"] = {"epsilon": self.epsilon or None}
        spec: dict[str, Any] = {
            "title": self.title,
            "choices": [c for c in self.choices if c],
            "voters": {"ids": voters},
            "noise": noise,
            "mixing": {"minBatch": self.min_batch, "maxWait": self.max_wait},
            "duplicates": self.duplicates,
            "schedule": schedule,
            "results": {"visibility": self.visibility},
        }
        return {"name": self.poll_name(attempt), "spec": spec}, found

    def api_problems(self, fields: list[dict[str, str]]) -> dict[str, list[str]]:
        """The API's field problems, keyed by form field, choice rows named as on the page."""
        rows = [i for i, c in enumerate(self.choices) if c]
        found: dict[str, list[str]] = {}
        for problem in fields:
            path, message = problem["field"], problem["message"]
            key = field_of(path, message)
            parts = path.split(".")
            if key == "choices" and len(parts) == 3 and parts[2].isdigit():
                index = int(parts[2])
                row = rows[index] + 1 if index < len(rows) else index + 1
                message = f"choice {row}: {message}"
            if key == "name" and self.derived_name:
                key = "title"
            found.setdefault(key, []).append(message)
        return found

    def preview(self) -> Preview:
        try:
            voters = len(parse_voters(self.voters))
        except VoterListError:
            voters = sum(1 for line in self.voters.splitlines() if line.strip())
        choices = max(len([c for c in self.choices if c]), 2)
        fake_mean = self._fake_mean()
        p: float | None = 0.0
        if self.randomized:
            eps = _number(self.epsilon)
            p = (
                choices / (math.exp(eps) - 1 + choices)
                if eps is not None and 0 < eps <= 20
                else None
            )
        margin = None
        if fake_mean is not None and p is not None:
            margin = expected_margin(voters, choices, fake_mean, p)
        eps_shown = epsilon_of(p, choices) if p else None
        return Preview(voters=voters, choices=choices, margin=margin, p=p, epsilon=eps_shown)

    def _fake_mean(self) -> float | None:
        if self.distribution == "uniform":
            low, high = _number(self.fake_min), _number(self.fake_max)
            return None if low is None or high is None else (low + high) / 2
        return _number(self.fake)
