"""The router: ids, late replies, order matching, events, lost replies (no I/O)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from qproxy.core.router import Router
from qproxy.core.stats import ChannelStats
from qproxy.errors import ConnectionLost


def make() -> Router:
    return Router(ChannelStats(), logging.getLogger("test.router"))


def test_encodes_commands_with_fresh_ids() -> None:
    r = make()
    a, b = r.new_call("guest-ping", None), r.new_call("guest-sync", None)
    assert json.loads(r.encode_command(a, None)) == {"execute": "guest-ping", "id": 1}
    assert json.loads(r.encode_command(b, {"id": 7, "é": "ü"})) == {
        "execute": "guest-sync", "arguments": {"id": 7, "é": "ü"}, "id": 2}
    assert r.encode_command(a, None).endswith(b"}\n")
    request: dict[str, Any] = {"execute": "x", "id": "client's own"}
    assert json.loads(r.encode_request(b, request))["id"] == 2


def test_routes_by_id_and_drops_late_replies() -> None:
    r = make()
    calls = [r.new_call("c", None) for _ in range(3)]
    for c in calls:
        r.add(c)
    r.route({"return": "b", "id": 2})
    assert r.ids_confirmed
    r.route({"return": "a", "id": 1})
    assert calls[1].get(block=False)["return"] == "b"
    assert calls[0].get(block=False)["return"] == "a"
    r.abandon(calls[2])
    r.route({"return": "late", "id": 3})
    r.route({"return": "unknown", "id": 99})
    r.route({"return": "unhashable", "id": {"x": 1}})
    assert not calls[2].ready()
    assert r.stats.late_replies == 3 and r.stats.replies == 2


def test_falls_back_to_order_when_the_agent_echoes_no_ids() -> None:
    r = make()
    calls = [r.new_call("c", None) for _ in range(3)]
    for c in calls:
        r.add(c)
    # Abandoned before any reply showed whether ids are echoed: its reply must still be
    # consumed in order, not handed to the next call.
    r.abandon(calls[0])
    for n in range(3):
        r.route({"return": n})
    assert r.echoes_ids is False
    assert not calls[0].ready()
    assert [c.get(block=False)["return"] for c in calls[1:]] == [1, 2]
    assert r.stats.late_replies == 1


def test_abandoned_calls_leave_the_table_once_ids_are_confirmed() -> None:
    r = make()
    first, second = r.new_call("c", None), r.new_call("c", None)
    r.add(first)
    r.add(second)
    r.route({"return": 1, "id": first.cid})
    r.abandon(second)
    assert r.pending == {}


def test_events_go_to_subscribers_and_a_bad_subscriber_is_contained() -> None:
    r = make()
    seen: list[dict[str, Any]] = []

    def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    r.subscribers += [broken, seen.append]
    r.route({"event": "SHUTDOWN", "data": {}})
    assert seen == [{"event": "SHUTDOWN", "data": {}}] and r.stats.events == 1


def test_fail_lost_fails_only_calls_before_the_boundary() -> None:
    r = make()
    calls = [r.new_call("c", None) for _ in range(4)]
    for c in calls:
        r.add(c)
    r.route({"return": 0, "id": 1})
    r.fail_lost(boundary=3)
    with pytest.raises(ConnectionLost, match="was lost"):
        calls[1].get(block=False)
    assert not calls[2].ready() and not calls[3].ready()
    r.fail_all(ConnectionLost("gone"))
    for c in calls[2:]:
        with pytest.raises(ConnectionLost, match="gone"):
            c.get(block=False)
    assert r.pending == {}


def test_on_done_runs_on_completion_and_failure() -> None:
    r = make()
    done: list[int] = []
    ok, bad = (r.new_call("c", lambda c: done.append(c.cid)) for _ in range(2))
    r.add(ok)
    r.add(bad)
    r.route({"return": 1, "id": ok.cid})
    r.fail_all(ConnectionLost("x"))
    assert done == [ok.cid, bad.cid]


def test_once_ids_are_confirmed_an_idless_reply_is_nobodys() -> None:
    r = make()
    first, second = r.new_call("c", None), r.new_call("c", None)
    r.add(first)
    r.add(second)
    r.route({"return": 1, "id": first.cid})
    r.route({"return": 123456})  # e.g. a stray answer: must not go to `second`
    assert not second.ready() and r.echoes_ids and r.stats.unexpected == 1
    r.route({"return": 2, "id": second.cid})
    assert second.get(block=False)["return"] == 2
