"""Where a poll's voters come from: listed, a file, one or several ConfigMaps."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
from pydantic import ValidationError

from privpoll.core.spec import MAX_VOTERS, NewPoll, Voters
from privpoll.service import polls
from privpoll.service.errors import ApiError
from privpoll.service.services import Services
from privpoll.settings import Settings


def test_a_list_of_a_million_voters_is_accepted() -> None:
    ids = [f"v{i}" for i in range(MAX_VOTERS)]
    assert MAX_VOTERS == 1_000_000
    assert len(Voters.model_validate({"ids": ids}).listed) == MAX_VOTERS


def test_several_config_maps_hold_one_list() -> None:
    voters = Voters.model_validate(
        {"configMapRefs": [{"name": "voters-0"}, {"name": "voters-1", "key": "ids"}]}
    )
    assert voters.config_map_refs is not None
    assert [(ref.name, ref.key) for ref in voters.config_map_refs] == [
        ("voters-0", "voters"),
        ("voters-1", "ids"),
    ]


def test_one_source_only() -> None:
    with pytest.raises(ValidationError, match="configMapRefs"):
        Voters.model_validate({"ids": ["a"], "configMapRefs": [{"name": "voters-0"}]})


def test_on_kubernetes_a_list_past_an_object_s_size_is_sent_to_config_maps() -> None:
    spec = {
        "title": "Budget",
        "choices": ["parks", "roads"],
        "voters": {"ids": [f"resident-{i:07d}@example.org" for i in range(60_000)]},
    }
    new = NewPoll.model_validate({"name": "budget", "spec": spec})
    svc = cast(Services, SimpleNamespace(settings=Settings(control_plane="kubernetes")))
    with pytest.raises(ApiError, match="configMapRefs") as refused:
        polls.create_poll(svc, new)
    assert refused.value.status == 413
