"""Every invalid spec field gets a message naming the field and what is allowed."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from privpoll.core.spec import (
    NewPoll,
    PollSpec,
    describe,
    parse_duration,
    parse_voter_list,
    problems,
)

VALID: dict[str, Any] = {
    "title": "Where do we eat on Friday?",
    "choices": ["pizza", "sushi", "tacos"],
    "voters": {"ids": ["alice", "bob", "carol"]},
    "noise": {
        "fakeVotes": {"distribution": "poisson", "mean": 2, "min": 1},
        "choiceWeights": "uniform",
    },
    "mixing": {"minBatch": 10, "maxWait": "30s"},
    "duplicates": "prevent",
    "schedule": {"opensAt": None, "closesAt": "2099-12-01T12:00:00Z"},
    "results": {"visibility": "live"},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    node[last] = value
    return spec


def error_of(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        NewPoll.model_validate({"name": "lunch", "spec": spec})
    return describe(problems(caught.value))


def test_valid_spec_round_trips() -> None:
    spec = PollSpec.model_validate(VALID)
    again = PollSpec.model_validate(spec.to_document())
    assert again == spec
    assert spec.rules().choices == ["pizza", "sushi", "tacos"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("title", "", "spec.title: must not be empty"),
        ("title", "x" * 201, "spec.title: is too long: at most 200 characters"),
        ("title", "two\nlines", "spec.title: must not contain control characters"),
        ("choices", ["pizza"], "spec.choices: needs at least 2 choices"),
        ("choices", [f"c{i}" for i in range(51)], "spec.choices: has too many: at most 50 choices"),
        ("choices", ["pizza", "pizza"], "choices must be unique: 'pizza' appears twice"),
        ("choices", ["pizza", ""], "spec.choices.1: must not be empty"),
        ("choices", ["pizza", " sushi"], "must not start or end with spaces"),
        ("voters.ids", [], "spec.voters.ids: needs at least 1 voter"),
        ("voters.ids", ["al", "al"], "voter ids must be unique: 'al' appears twice"),
        ("voters.ids", ["a\tb"], "spec.voters.ids.0: must not contain control characters"),
        ("voters", {"ids": ["a"], "extra": 1}, "spec.voters.extra: is not a field of a poll"),
        (
            "voters",
            {},
            "spec.voters: give exactly one of 'ids', 'configMapRef', 'configMapRefs' or "
            "'secretRef'",
        ),
        (
            "voters",
            {"configMapRef": {"name": "staff"}},
            "configMapRef(s) and secretRef work on Kubernetes only",
        ),
        ("retention", "forever", "spec.retention: must be 'keep' or 'delete'"),
        ("noise.fakeVotes", {"distribution": "gauss"}, "must be 'fixed', 'poisson'"),
        ("noise.fakeVotes", {"distribution": "fixed"}, "distribution 'fixed' needs 'count'"),
        ("noise.fakeVotes", {"distribution": "poisson"}, "distribution 'poisson' needs 'mean'"),
        ("noise.fakeVotes", {"distribution": "uniform"}, "distribution 'uniform' needs 'max'"),
        (
            "noise.fakeVotes",
            {"distribution": "uniform", "min": 3, "max": 2},
            "spec.noise.fakeVotes: max 2 is below min 3",
        ),
        (
            "noise.fakeVotes",
            {"distribution": "poisson", "mean": 2, "min": 0},
            "must add at least one fake vote per real vote (min >= 1)",
        ),
        (
            "noise.fakeVotes",
            {"distribution": "fixed", "count": 0, "min": 0},
            "unless randomizedResponse is on",
        ),
        ("noise.fakeVotes", {"distribution": "fixed", "count": 101}, "must be at most 100"),
        ("noise.choiceWeights", "skewed", "spec.noise.choiceWeights"),
        (
            "noise.choiceWeights",
            {"pizza": 1, "sushi": 0, "tacos": 1},
            "every weight must be a positive number",
        ),
        (
            "noise.choiceWeights",
            {"pizza": 1, "sushi": 1},
            "noise.choiceWeights: missing a weight for tacos",
        ),
        ("noise.randomizedResponse", {}, "give exactly one of 'epsilon' or 'probability'"),
        ("noise.randomizedResponse", {"probability": 1.5}, "less than 1"),
        ("noise.randomizedResponse", {"epsilon": -1}, "must be more than 0"),
        ("mixing.minBatch", 0, "spec.mixing.minBatch: must be at least 1"),
        ("mixing.maxWait", "soon", "'soon' is not a duration: write e.g. 500ms, 30s, 2m or 1h"),
        ("mixing.maxWait", "2h", "spec.mixing.maxWait: must be more than 0 and at most 1h"),
        ("duplicates", "allow", "spec.duplicates: must be 'prevent' or 'detect'"),
        ("schedule.closesAt", "2099-12-01T12:00:00", "needs a time zone"),
        ("schedule.closesAt", "tomorrow", "spec.schedule.closesAt: is not a date and time"),
        ("schedule.opensAt", "2099-12-02T12:00:00Z", "closesAt must be after opensAt"),
        ("schedule.closesAt", "2001-01-01T00:00:00Z", "closesAt is in the past"),
        ("results.visibility", "never", "spec.results.visibility: must be 'live'"),
        ("choises", ["a", "b"], "spec.choises: is not a field of a poll"),
    ],
)
def test_invalid_field_has_a_clear_message(path: str, value: Any, expected: str) -> None:
    assert expected in error_of(with_change(path, value))


@pytest.mark.parametrize("name", ["Lunch", "-x", "x-", "a.b", "", "a" * 41, "ü"])
def test_invalid_name_says_what_is_allowed(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NewPoll.model_validate({"name": name, "spec": VALID})
    assert "name: must be 1-40 lowercase letters, digits or '-'" in describe(problems(caught.value))


def test_yaml_booleans_get_a_hint_to_quote_them() -> None:
    message = error_of(with_change("choices", [True, False]))
    assert "spec.choices.0: must be text: quote yes/no" in message
    assert "YAML reads them as true/false" in message


def test_problems_keep_a_stable_code() -> None:
    with pytest.raises(ValidationError) as caught:
        NewPoll.model_validate({"name": "x", "spec": with_change("title", "")})
    (found,) = problems(caught.value)
    assert (found.field, found.code) == ("spec.title", "string_too_short")


def test_missing_fields_are_named() -> None:
    message = error_of({"title": "t"})
    assert "spec.choices: is required" in message
    assert "spec.voters: is required" in message


def test_voter_lists_from_configmaps() -> None:
    spec = PollSpec.model_validate(with_change("voters", {"secretRef": {"name": "staff"}}))
    assert spec.voters.secret_ref is not None
    assert spec.voters.secret_ref.key == "voters"
    ids = parse_voter_list("alice\n\n# the board\nbob  \n")
    assert spec.with_voters(ids).voters.listed == ["alice", "bob"]


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("30s") == 30
    assert parse_duration("2m") == 120
    assert parse_duration("1h") == 3600


def test_weights_and_randomized_response() -> None:
    spec = PollSpec.model_validate(
        with_change("noise.choiceWeights", {"pizza": 2, "sushi": 1, "tacos": 1})
    )
    assert spec.fake_weights() == [0.5, 0.25, 0.25]
    spec = PollSpec.model_validate(with_change("noise.randomizedResponse", {"epsilon": 2.0}))
    p = spec.replacement_probability()
    # ε = ln(1 + m(1-p)/p) must give back the ε asked for.
    import math

    assert math.isclose(math.log(1 + 3 * (1 - p) / p), 2.0)


def test_closes_at_in_the_future_is_fine() -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    NewPoll.model_validate({"name": "lunch", "spec": with_change("schedule.closesAt", later)})
