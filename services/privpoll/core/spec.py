"""The poll spec: one model for the HTTP API body, the Poll custom resource and local YAML."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

MAX_CHOICES = 50
MAX_VOTERS = 1_000_000
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _printable(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (tabs, newlines, ...)")
    if value != value.strip():
        raise ValueError(f"must not start or end with spaces: {value!r}")
    return value


Label = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]
VoterId = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]


def _unique(values: list[str], what: str) -> list[str]:
    """``values``, checked for repeats. Sorted references rather than a set: a million voter
    ids take 8 MB that way, against 32-48 MB for a set's table while it grows."""
    ordered = sorted(values)
    for value, after in itertools.pairwise(ordered):
        if value == after:
            raise ValueError(f"{what} must be unique: {value!r} appears twice")
    return values


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``500ms``, ``2m`` or ``1h``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: write e.g. 500ms, 30s, 2m or 1h")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class FakeVotes(_Model):
    """How many fake ballots (K) go into each envelope beside the real one."""

    distribution: Literal["fixed", "poisson", "uniform"] = "poisson"
    count: int | None = Field(default=None, ge=0, le=100, description="K for `fixed`")
    mean: float | None = Field(default=None, gt=0, le=100, description="E[K] for `poisson`")
    min: int = Field(default=1, ge=0, le=100, description="smallest K (all distributions)")
    max: int | None = Field(default=None, ge=0, le=100, description="largest K for `uniform`")

    @model_validator(mode="after")
    def _shape(self) -> FakeVotes:
        if self.distribution == "fixed":
            if self.count is None:
                raise ValueError("distribution 'fixed' needs 'count' (fake votes per real vote)")
            if self.count < self.min:
                raise ValueError(f"count {self.count} is below min {self.min}")
        elif self.distribution == "poisson":
            if self.mean is None:
                raise ValueError("distribution 'poisson' needs 'mean' (average fake votes)")
            if self.mean < self.min:
                raise ValueError(f"mean {self.mean} is below min {self.min}")
        else:
            if self.max is None:
                raise ValueError("distribution 'uniform' needs 'max' (most fake votes)")
            if self.max < self.min:
                raise ValueError(f"max {self.max} is below min {self.min}")
        return self

    @property
    def lowest(self) -> int:
        return self.count if self.distribution == "fixed" and self.count is not None else self.min

    @property
    def expected(self) -> float:
        """E[K], for planning how noisy the results will be."""
        if self.distribution == "fixed":
            return float(self.count or 0)
        if self.distribution == "poisson":
            return float(self.mean or 0)
        return (self.min + (self.max or self.min)) / 2


class RandomizedResponse(_Model):
    """Replace the real choice by a uniformly random one with probability p (ε-LDP)."""

    epsilon: float | None = Field(default=None, gt=0, le=20)
    probability: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_of(self) -> RandomizedResponse:
        if (self.epsilon is None) == (self.probability is None):
            raise ValueError("give exactly one of 'epsilon' or 'probability'")
        return self

    def replacement_probability(self, choices: int) -> float:
        if self.probability is not None:
            return self.probability
        assert self.epsilon is not None
        return choices / (math.exp(self.epsilon) - 1 + choices)


class Noise(_Model):
    fake_votes: FakeVotes = Field(default_factory=lambda: FakeVotes(mean=2, min=1))
    choice_weights: Literal["uniform"] | dict[str, float] = "uniform"
    randomized_response: RandomizedResponse | None = None

    @field_validator("choice_weights")
    @classmethod
    def _positive(cls, value: Literal["uniform"] | dict[str, float]) -> Any:
        if isinstance(value, dict):
            bad = sorted(k for k, w in value.items() if not (w > 0 and math.isfinite(w)))
            if bad:
                raise ValueError(
                    f"every weight must be a positive number (a zero weight would let a "
                    f"ballot of that choice stand out as real): {', '.join(bad)}"
                )
        return value

    @model_validator(mode="after")
    def _always_some_noise(self) -> Noise:
        if self.fake_votes.lowest < 1 and self.randomized_response is None:
            raise ValueError(
                "fakeVotes must add at least one fake vote per real vote (min >= 1) unless "
                "randomizedResponse is on; otherwise a lone vote could be read off the database"
            )
        return self


# The noise of a poll that says nothing about noise; docs/privacy.md measures the choice. At
# 1,000 voters and 3 choices the 95% interval stays within ±6% of the voters, and randomized
# response makes certainty impossible whatever a thief holds: the odds for any voter stay
# below e^2.5 ≈ 12 to 1.
RECOMMENDED_EPSILON = 2.5


def recommended_noise() -> Noise:
    """Fake ballots as ``Noise()`` has them, plus randomized response at ε = 2.5."""
    return Noise(randomized_response=RandomizedResponse(epsilon=RECOMMENDED_EPSILON))


class Mixing(_Model):
    min_batch: int = Field(default=10, ge=1, le=10_000)
    max_wait: str = Field(default="30s", description="e.g. 500ms, 30s, 2m")

    @field_validator("max_wait")
    @classmethod
    def _duration(cls, value: str) -> str:
        seconds = parse_duration(value)
        if not 0 < seconds <= 3600:
            raise ValueError("must be more than 0 and at most 1h")
        return value

    @property
    def max_wait_seconds(self) -> float:
        return parse_duration(self.max_wait)


class Schedule(_Model):
    opens_at: datetime | None = None
    closes_at: datetime | None = None

    @field_validator("opens_at", "closes_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-12-01T12:00:00Z")
        return value

    @model_validator(mode="after")
    def _order(self) -> Schedule:
        if self.opens_at and self.closes_at and self.closes_at <= self.opens_at:
            raise ValueError("closesAt must be after opensAt")
        return self


class KeyRef(_Model):
    """A key of a ConfigMap or Secret in the Poll's namespace (Kubernetes only)."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="voters", min_length=1, max_length=253)


# ConfigMaps of one voter list: an object holds at most 1 MiB, about 50,000-100,000 ids, so a
# list of a million is split over several.
MAX_CONFIG_MAPS = 100


class Voters(_Model):
    """The eligible voters: listed, or (on Kubernetes) one id per line in a ConfigMap/Secret,
    or in several ConfigMaps read one after the other (a list bigger than 1 MiB)."""

    ids: list[VoterId] | None = Field(default=None, min_length=1, max_length=MAX_VOTERS)
    config_map_ref: KeyRef | None = None
    config_map_refs: list[KeyRef] | None = Field(
        default=None, min_length=1, max_length=MAX_CONFIG_MAPS
    )
    secret_ref: KeyRef | None = None

    @field_validator("ids")
    @classmethod
    def _unique_ids(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value, "voter ids")

    @model_validator(mode="after")
    def _one_source(self) -> Voters:
        given = [
            self.ids is not None,
            self.config_map_ref is not None,
            self.config_map_refs is not None,
            self.secret_ref is not None,
        ]
        if sum(given) != 1:
            raise ValueError(
                "give exactly one of 'ids', 'configMapRef', 'configMapRefs' or 'secretRef'"
            )
        return self

    @property
    def listed(self) -> list[str]:
        """The ids; a reference must have been resolved (see ``resolved``) before."""
        if self.ids is None:
            raise ValueError(
                "voters.configMapRef(s) / voters.secretRef work on Kubernetes only: list the ids"
            )
        return self.ids


def parse_voter_list(text: str | Iterable[str]) -> list[str]:
    """One voter id per line (a ConfigMap or Secret value, or the lines of a file as they are
    read); blank lines and #comments skipped."""
    lines = text.splitlines() if isinstance(text, str) else text
    found = []
    for line in lines:
        voter = line.strip()
        if voter and not voter.startswith("#"):
            found.append(voter)
    return found


class Results(_Model):
    visibility: Literal["live", "afterClose"] = "live"


class PollRules(_Model):
    """Everything about a poll but its voter list: what the ingest and the sinks need."""

    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(
        default=None, max_length=2000, description="shown to voters under the title"
    )
    choices: list[Label] = Field(min_length=2, max_length=MAX_CHOICES)
    # Left out: the recommended noise. Given: exactly what it says (randomized response only
    # if it lists it), so a creator who spells out the noise gets no surprise.
    noise: Noise = Field(default_factory=recommended_noise)
    mixing: Mixing = Field(default_factory=Mixing)
    duplicates: Literal["prevent", "detect"] = "prevent"
    schedule: Schedule = Field(default_factory=Schedule)
    results: Results = Field(default_factory=Results)
    retention: Literal["keep", "delete"] = Field(
        default="keep", description="what happens to the vote rows when the poll is deleted"
    )

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _printable(value)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Line breaks are kept (a paragraph or two); other control characters are not text.
        if any((ord(c) < 32 and c not in "\n\r") or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters other than line breaks")
        return value.strip() or None

    @field_validator("choices")
    @classmethod
    def _unique_choices(cls, value: list[str]) -> list[str]:
        return _unique(value, "choices")

    @model_validator(mode="after")
    def _weights_match(self) -> PollRules:
        weights = self.noise.choice_weights
        if isinstance(weights, dict) and set(weights) != set(self.choices):
            missing = [c for c in self.choices if c not in weights]
            extra = sorted(set(weights) - set(self.choices))
            parts = []
            if missing:
                parts.append(f"missing a weight for {', '.join(missing)}")
            if extra:
                parts.append(f"weights for unknown choices {', '.join(extra)}")
            raise ValueError(f"noise.choiceWeights: {'; '.join(parts)}")
        return self

    def fake_weights(self) -> list[float]:
        """Fake-choice weights w_j in choice order, summing to 1."""
        weights = self.noise.choice_weights
        if weights == "uniform":
            return [1 / len(self.choices)] * len(self.choices)
        assert isinstance(weights, dict)
        total = sum(weights.values())
        return [weights[c] / total for c in self.choices]

    def replacement_probability(self) -> float:
        rr = self.noise.randomized_response
        return rr.replacement_probability(len(self.choices)) if rr else 0.0

    def to_document(self) -> dict[str, Any]:
        """The spec as the camelCase document users write (API body, CR spec, YAML)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class PollSpec(PollRules):
    """The whole poll as its creator writes it."""

    voters: Voters

    def rules(self) -> PollRules:
        return PollRules.model_validate(self.model_dump(exclude={"voters"}))

    def with_voters(self, ids: list[str]) -> PollSpec:
        """This spec with its voter reference replaced by the ids it points to."""
        return PollSpec.model_validate(
            {**self.model_dump(exclude={"voters"}), "voters": {"ids": ids}}
        )


class NewPoll(_Model):
    """Body of ``POST /api/v1/polls``."""

    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits and '-'")
    spec: PollSpec

    @model_validator(mode="after")
    def _listed_voters(self) -> NewPoll:
        if self.spec.voters.ids is None:
            raise ValueError(
                "spec.voters: configMapRef(s) and secretRef work on Kubernetes only; "
                "list the voter ids here, or upload them as a file ('voters', one id a line)"
            )
        return self

    @model_validator(mode="after")
    def _not_closed_yet(self) -> NewPoll:
        closes = self.spec.schedule.closes_at
        if closes is not None and closes <= datetime.now(UTC):
            raise ValueError("spec.schedule.closesAt is in the past: a new poll must close later")
        return self


class FieldProblem(BaseModel):
    field: str
    message: str
    # pydantic's error type ("string_too_short", "missing", ...): stable, for programs.
    code: str = "invalid"


YAML_BOOLEANS = "quote yes/no (and on/off, true/false): YAML reads them as true/false, not as text"


def _plural(count: Any, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _items(loc: str) -> tuple[str, str]:
    """What a list field holds, in words: ('choice', 'choices') for spec.choices."""
    if loc.endswith("choices"):
        return "choice", "choices"
    if loc.endswith("ids") or loc.endswith("voters"):
        return "voter", "voters"
    return "item", "items"


def plain_message(item: Mapping[str, Any], loc: str) -> str:
    """pydantic's message for one error, rewritten for a person."""
    kind = item["type"]
    ctx = item.get("ctx") or {}
    given = item.get("input")
    if kind == "extra_forbidden":
        return "is not a field of a poll: check its spelling and indentation"
    if kind == "missing":
        return "is required"
    if kind == "string_type":
        if isinstance(given, bool):
            return f"must be text: {YAML_BOOLEANS}"
        if given is None:
            return "must not be empty"
        return "must be text"
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"needs at least {least} characters"
    if kind == "string_too_long":
        return f"is too long: at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        one, many = _items(loc)
        return f"needs at least {_plural(ctx.get('min_length'), one, many)}"
    if kind == "too_long":
        one, many = _items(loc)
        return f"has too many: at most {_plural(ctx.get('max_length'), one, many)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return "must be a number"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be an object of fields ({...} in JSON; key: value lines, indented, in YAML)"
    if kind == "list_type":
        return "must be a list (one '- item' per line, or [a, b])"
    if kind == "greater_than":
        return f"must be more than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind.startswith("datetime") or kind.startswith("date_"):
        return "is not a date and time: write e.g. 2026-12-01T12:00:00Z"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}"
    if kind == "string_pattern_mismatch" and loc.endswith("name"):
        return (
            "must be 1-40 lowercase letters, digits or '-', starting and ending with a "
            "letter or digit"
        )
    message = str(item["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    return message


def problems(error: ValidationError, prefix: str = "") -> list[FieldProblem]:
    """Turn pydantic's errors into one line per field, in the words users wrote."""
    found = []
    for item in error.errors(include_url=False):
        # A union's member (e.g. "literal['uniform']" or "dict[str,float]") is no field name.
        parts = [str(part) for part in item["loc"] if not _is_type_name(part)]
        loc = ".".join(parts)
        field = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "body"
        found.append(FieldProblem(field=field, message=plain_message(item, loc), code=item["type"]))
    return found


def _is_type_name(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("str", "float", "int", "dict"))


def describe(found: list[FieldProblem]) -> str:
    return "; ".join(f"{p.field}: {p.message}" for p in found)
