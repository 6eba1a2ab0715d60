"""Where a poll's voters come from: listed, a file, one or several ConfigMaps."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from privpoll.core.spec import MAX_VOTERS, Voters


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
