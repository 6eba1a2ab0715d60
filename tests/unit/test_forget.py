"""What can be checked of the CockroachDB side without a CockroachDB (none on the test machine):
reading gc.ttlseconds from SHOW ZONE CONFIGURATION's text."""

from __future__ import annotations

from privpoll.db import forget


def test_the_ttl_is_read_from_a_zone_configuration() -> None:
    shown = (
        "TABLE actors ALTER TABLE actors CONFIGURE ZONE USING range_min_bytes = 134217728, "
        "range_max_bytes = 536870912, gc.ttlseconds = 600, num_replicas = 3"
    )
    assert forget._ttl(shown) == 600
    assert forget._ttl("RANGE default ... gc.ttlseconds = 14400,") == 14400
    assert forget._ttl("no such setting here") is None


def test_privpoll_up_runs_postgresql_so_that_the_wal_forgets() -> None:
    assert forget.WAL_SETTINGS["wal_recycle"] == "off"
    assert forget.WAL_SETTINGS["wal_keep_size"] == "0"
    assert forget.WAL_SETTINGS["archive_mode"] == "off"
    assert forget.WAL_SETTINGS["max_wal_senders"] == "0"
