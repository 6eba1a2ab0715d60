"""The creation form: voter lists, names, times, presets and where API messages show."""

from __future__ import annotations

import math
import re

import pytest

from privpoll.core.results import expected_margin
from privpoll.core.spec import NewPoll
from privpoll.web.forms import (
    PRESETS,
    PollForm,
    VoterListError,
    decode_upload,
    field_of,
    parse_local_time,
    parse_voters,
    slug,
)


def submitted(fields: dict[str, str], choices: list[str], upload: str | None = None) -> PollForm:
    return PollForm.submitted(fields.get, choices, upload)


@pytest.mark.parametrize(
    ("text", "voters"),
    [
        ("alice\nbob\n\ncarol\n", ["alice", "bob", "carol"]),
        ("  alice \r\nbob", ["alice", "bob"]),
        ("voter,name\nalice,Alice A.\nbob,Bob B.\n", ["alice", "bob"]),
        ("Email;Name\nalice@example.org;Alice\n", ["alice@example.org"]),
        ('"smith, john"\nbob\n', ["smith, john", "bob"]),
        ("", []),
    ],
)
def test_voter_lists_read_as_people_write_them(text: str, voters: list[str]) -> None:
    assert parse_voters(text) == voters


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('alice\n"bob\n', "line 2 is not valid CSV"),
        ("alice, bob, carol", "line 1 holds 3 values (alice, bob, carol)"),
        ("voter,name\n,Nameless\n", "line 2: the first column (the voter id) is empty"),
        ("alice\x00", "NUL"),
    ],
)
def test_malformed_voter_lists_say_where(text: str, message: str) -> None:
    with pytest.raises(VoterListError, match=re.escape(message)):
        parse_voters(text)


def test_an_upload_must_be_utf8() -> None:
    assert decode_upload("\ufeffalice\n".encode()) == "alice\n"
    with pytest.raises(VoterListError, match="not UTF-8"):
        decode_upload("zoë".encode("latin-1"))


def test_names_are_made_from_titles() -> None:
    assert slug("Où mange-t-on, vendredi ?") == "ou-mange-t-on-vendredi"
    assert slug("???") == "poll"
    assert len(slug("x" * 80)) == 40
    form = PollForm(title="Lunch")
    assert [form.poll_name(n) for n in (1, 2)] == ["lunch", "lunch-2"]
    assert PollForm(title="Lunch", name="mine").poll_name(2) == "mine"


def test_local_times_get_the_browsers_offset() -> None:
    assert parse_local_time("2026-12-01T12:00", 120) == "2026-12-01T12:00:00+02:00"
    assert parse_local_time("2026-12-01T12:00", 0) == "2026-12-01T12:00:00+00:00"
    with pytest.raises(ValueError, match="not a date and time"):
        parse_local_time("tomorrow", 0)


def test_a_filled_form_gives_a_body_the_api_accepts() -> None:
    form = submitted(
        {
            "title": " Lunch ",
            "voters": "alice\nbob\n",
            "closesAt": "2999-01-01T10:00",
            "utcOffset": "-60",
            "privacy": "high",
            "duplicates": "detect",
            "visibility": "afterClose",
        },
        ["pizza", " sushi", ""],
    )
    body, found = form.body()
    assert found == {}
    new = NewPoll.model_validate(body)
    assert new.name == "lunch"
    assert new.spec.title == "Lunch"
    assert new.spec.choices == ["pizza", "sushi"]
    assert new.spec.voters.ids == ["alice", "bob"]
    assert new.spec.duplicates == "detect"
    assert new.spec.results.visibility == "afterClose"
    assert new.spec.schedule.closes_at is not None
    assert new.spec.schedule.closes_at.isoformat() == "2999-01-01T10:00:00-01:00"
    assert new.spec.noise.randomized_response is not None
    assert new.spec.noise.randomized_response.epsilon == 1.5


def test_a_preset_overrides_the_advanced_fields_and_custom_keeps_them() -> None:
    fields = {
        "title": "t",
        "voters": "v",
        "distribution": "uniform",
        "fakeMin": "2",
        "fakeMax": "6",
    }
    preset = submitted({**fields, "privacy": "low"}, ["a", "b"])
    assert (preset.distribution, preset.fake) == (PRESETS["low"].distribution, "1")
    custom = submitted({**fields, "privacy": "custom"}, ["a", "b"])
    assert NewPoll.model_validate(
        {**custom.body()[0], "name": "x"}
    ).spec.noise.fake_votes.expected == pytest.approx(4)


def test_every_preset_is_a_valid_noise_spec() -> None:
    for key in PRESETS:
        body, _ = PollForm(title="t", choices=("a", "b"), voters="v").with_preset(key).body()
        NewPoll.model_validate(body)


def test_an_uploaded_list_joins_the_pasted_one_or_says_what_is_wrong() -> None:
    form = submitted({"voters": "alice"}, ["a", "b"], "voter,name\nbob,Bob\n")
    assert form.voters == "alice\nbob"
    broken = submitted({"voters": "alice"}, ["a", "b"], '"bob\n')
    assert broken.voters == "alice"
    assert broken.problems["voters"][0].startswith("the uploaded file: line")


def test_api_problems_land_next_to_their_fields() -> None:
    assert field_of("spec.title", "x") == "title"
    assert field_of("spec.choices.1", "x") == "choices"
    assert field_of("spec.voters.ids", "x") == "voters"
    assert field_of("spec.schedule", "closesAt must be after opensAt") == "closesAt"
    assert field_of("spec.noise.fakeVotes", "x") == "noise"
    assert field_of("body", "spec.schedule.closesAt is in the past: later") == "closesAt"
    assert field_of("body", "something else") == "form"
    form = PollForm(title="t", choices=("a", "", "a "))
    found = form.api_problems([{"field": "spec.choices.1", "message": "must not end with spaces"}])
    assert found == {"choices": ["choice 3: must not end with spaces"]}
    derived = PollForm(title="t").api_problems([{"field": "name", "message": "bad"}])
    assert derived == {"title": ["bad"]}


def test_rows_are_added_and_removed_but_two_stay() -> None:
    form = PollForm(choices=("a", "b"))
    assert form.add_choice().choices == ("a", "b", "")
    assert form.remove_choice(0).choices == ("a", "b")
    assert form.add_choice().remove_choice(0).choices == ("b", "")


def test_preview_uses_the_estimators_formula() -> None:
    form = PollForm(choices=("a", "b", "c"), voters="\n".join(f"v{i}" for i in range(300)))
    shown = form.preview()
    assert shown.voters == 300
    assert shown.epsilon == pytest.approx(2.5), "the default preset is the recommended noise"
    assert shown.margin == pytest.approx(expected_margin(300, 3, 2.0, 3 / (math.exp(2.5) + 2)))
    plain = form.with_preset("low").preview()
    assert plain.epsilon is None
    assert plain.margin == pytest.approx(expected_margin(300, 3, 1.0))
    private = form.with_preset("high").preview()
    assert private.epsilon == pytest.approx(1.5)
    assert private.margin is not None
    assert shown.margin is not None
    assert private.margin > shown.margin
    broken = PollForm(distribution="poisson", fake="lots").preview()
    assert broken.margin is None
