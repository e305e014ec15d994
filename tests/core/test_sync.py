"""The synchroniser's bookkeeping of markers (no I/O)."""

from __future__ import annotations

import logging

from qproxy.core.handshake import new_marker
from qproxy.core.router import Router
from qproxy.core.stats import ChannelStats
from qproxy.core.sync import Synchronizer


def make() -> Synchronizer:
    stats = ChannelStats()
    log = logging.getLogger("test.sync")
    return Synchronizer("sync-delimited", router=Router(stats, log), stats=stats, log=log,
                        enqueue=lambda data: None, is_ready=lambda: True,
                        first_wait=0.1, max_wait=1.0)


def test_the_marker_in_flight_needs_its_0xff() -> None:
    sync = make()
    marker = new_marker("sync-delimited")
    assert marker is not None
    sync._arm(marker)
    # Without the 0xFF in front it does not complete the sync (it is still no call's).
    assert sync.answers({"return": marker.sync_id})
    assert not sync._answered.is_set()
    sync._arm(marker)
    sync.on_reset()
    assert sync.answers({"return": marker.sync_id})
    assert sync._answered.is_set()


def test_a_late_answer_to_an_older_marker_is_consumed_once() -> None:
    sync = make()
    old, new = new_marker("sync-delimited"), new_marker("sync-delimited")
    assert old is not None and new is not None
    sync._arm(old)
    sync._arm(new)  # gave up waiting for `old`
    assert sync.answers({"return": old.sync_id})  # dropped, never routed to a call
    assert not sync.answers({"return": old.sync_id})  # only once
    assert not sync.answers({"return": old.sync_id, "id": 5})  # a call's reply stays a reply
    sync.on_reset()
    assert sync.answers({"return": new.sync_id})
    sync.stop()
    assert not sync.answers({"return": new.sync_id})
