"""The fast paths of the invitations (a million voters) write what the general ones do."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from privpoll.core import tokens
from privpoll.service.polls import _quoted


@given(st.text(min_size=1, max_size=40), st.integers(0, 3))
def test_a_poll_s_token_maker_signs_as_voter_token_does(voter: str, generation: int) -> None:
    """Reissued links included: a generation above 0 is part of the token."""
    secret, poll = b"s" * 32, uuid.UUID(int=7)
    made = tokens.voter_tokens(secret, poll)(voter, generation)
    assert made == tokens.voter_token(secret, poll, voter, generation)


@given(st.text(min_size=1, max_size=40))
def test_a_voter_id_in_a_link_is_quoted_as_quote_does(voter: str) -> None:
    assert _quoted(voter) == quote(voter, safe="")


@given(st.text(max_size=30), st.text(max_size=30))
def test_an_invitation_s_json_is_json_dumps_own(voter: str, url: str) -> None:
    text = json.encoder.encode_basestring_ascii
    ours = f'{{"voter": {text(voter)}, "token": {text("t")}, "url": {text(url)}}}'
    assert ours == json.dumps({"voter": voter, "token": "t", "url": url})
