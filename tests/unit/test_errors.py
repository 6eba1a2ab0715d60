"""What a 500 leaves in the log: where it was raised, never what it was about."""

from __future__ import annotations

from privpoll.service.errors import stack_of


def _cast(voter: str, choice: str) -> None:
    raise KeyError(f"{voter} chose {choice}")


def test_the_stack_of_an_error_names_its_frames_but_no_value() -> None:
    try:
        _cast("alice@example.org", "pizza")
    except KeyError as error:
        logged = stack_of(error)
    assert "test_errors.py" in logged
    assert "in _cast" in logged, "the frame that raised is named"
    assert "alice" not in logged
    assert "pizza" not in logged
