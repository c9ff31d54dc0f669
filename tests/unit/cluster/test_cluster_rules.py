"""The cluster's pure parts: its settings, the purge order as it travels, the report of a
purge sent to every node, and the purge log's rule for what a node does with the log."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from wsgi_proxy.cluster.nodes import NodeResult, Report
from wsgi_proxy.cluster.purge_log import (
    CONTINUITY,
    Adopt,
    Decision,
    LogView,
    NodeState,
    PurgeAll,
    Replay,
    UpToDate,
    decide,
)
from wsgi_proxy.core.config import Config
from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.store.purge import Purge

NODES = "http://10.0.0.1:8080, HTTP://10.0.0.2:8080/"


def cluster_env(**settings: str) -> dict[str, str]:
    return {"HOME": "/nonexistent", **{f"WSGI_PROXY_{k}": v for k, v in settings.items()}}


def test_cluster_settings_are_off_by_default() -> None:
    config = Config.from_env(cluster_env())
    assert (config.peers, config.node_url, config.redis_url) == ((), "", "")


def test_peers_are_normalised_and_the_node_is_one_of_them() -> None:
    config = Config.from_env(
        cluster_env(PEERS=NODES, NODE_URL="http://10.0.0.2:8080", REDIS_URL="redis://r:6379/0")
    )
    assert config.peers == ("http://10.0.0.1:8080", "http://10.0.0.2:8080")
    assert config.node_url == "http://10.0.0.2:8080"
    assert config.redis_url == "redis://r:6379/0"


@pytest.mark.parametrize(
    ("variable", "settings"),
    [
        ("WSGI_PROXY_PEERS", {"PEERS": "http://a:1,ftp://b:2"}),
        ("WSGI_PROXY_PEERS", {"PEERS": "http://a:1/admin"}),
        ("WSGI_PROXY_PEERS", {"PEERS": "http://a:1,http://A:1"}),
        ("WSGI_PROXY_NODE_URL", {"NODE_URL": "a:1"}),
        ("WSGI_PROXY_NODE_URL", {"PEERS": "http://a:1", "NODE_URL": "http://b:1"}),
        ("WSGI_PROXY_NODE_URL", {"REDIS_URL": "redis://r:6379"}),
        ("WSGI_PROXY_REDIS_URL", {"REDIS_URL": "http://r:6379", "NODE_URL": "http://a:1"}),
        ("WSGI_PROXY_REDIS_URL", {"REDIS_URL": "redis://r:port", "NODE_URL": "http://a:1"}),
        ("WSGI_PROXY_REDIS_URL", {"REDIS_URL": "redis://", "NODE_URL": "http://a:1"}),
    ],
)
def test_bad_cluster_settings_name_their_variable(variable: str, settings: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as raised:
        Config.from_env(cluster_env(**settings))
    assert raised.value.variable == variable


def test_describe_hides_the_redis_password() -> None:
    config = Config.from_env(
        cluster_env(REDIS_URL="redis://user:s3cret@r:6379/1", NODE_URL="http://a:1")
    )
    shown = dict(config.describe())["WSGI_PROXY_REDIS_URL"]
    assert shown == "redis://user:***@r:6379/1"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("url=/a/b%3Fc%3D1", Purge("url", "/a/b?c=1")),
        ("prefix=/a/&soft=1", Purge("prefix", "/a/", soft=True)),
        ("tag=product-42", Purge("tag", "product-42")),
        ("all=1&soft=yes", Purge("all", "", soft=True)),
        ("all=0", None),
        ("tag=", None),
        ("", None),
    ],
)
def test_purge_from_the_admin_query(query: str, expected: Purge | None) -> None:
    assert Purge.from_query(parse_qs(query)) == expected


@pytest.mark.parametrize(
    "purge",
    [Purge("url", "/a b?x=1&y=é"), Purge("prefix", "/p/", soft=True), Purge("all", "")],
)
def test_a_purge_survives_its_journeys(purge: Purge) -> None:
    assert Purge.from_query(parse_qs(purge.query())) == purge  # to the peers
    assert Purge.from_json(purge.to_json()) == purge  # through the purge log


@pytest.mark.parametrize("text", ["[]", '{"kind": "drop"}', "not json"])
def test_a_damaged_purge_log_entry_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        Purge.from_json(text)


def test_the_report_names_the_failed_nodes() -> None:
    report = Report(
        Purge("tag", "t"),
        (NodeResult("http://a:1", 3), NodeResult("http://b:1", None, "refused")),
        "7",
    )
    assert report.purged == 3
    assert report.format().splitlines() == [
        "purged 3 on 1 of 2 nodes",
        "http://a:1: purged 3",
        "http://b:1: failed: refused",
        "purge log: 7",
        "the failed nodes apply it from the purge log when they are back",
    ]
    unlogged = Report(Purge("all", ""), (NodeResult("http://b:1", None, "refused"),), "off")
    assert unlogged.format().splitlines()[-1].startswith("the failed nodes did not get it")


def test_the_report_of_a_ban_has_no_count() -> None:
    """A purge by tag or prefix is a ban on every node (store/bans.py): no count yet; a
    URL purge may be a ban on one node (its list of sites incomplete), exact on another."""
    banned = Report(
        Purge("tag", "t"),
        (NodeResult("http://a:1", 0, banned=True), NodeResult("http://b:1", None, "refused")),
        "off",
    )
    assert banned.format().splitlines()[:3] == [
        "banned on 1 of 2 nodes: entries stop being served now; removed in the background",
        "http://a:1: banned",
        "http://b:1: failed: refused",
    ]
    mixed = Report(
        Purge("url", "/a"),
        (NodeResult("http://a:1", 0, banned=True), NodeResult("http://b:1", 2)),
        "off",
    )
    assert mixed.format().splitlines() == [
        "purged 2 and banned on 2 of 2 nodes",
        "http://a:1: banned",
        "http://b:1: purged 2",
    ]


def view(epoch: str = "e1", head: int = 10, first: int = 1) -> LogView:
    return LogView(epoch, head, first)


WATCHED = NodeState("e1", 10, checked_at=100.0, lost_at=100.0 + CONTINUITY)
AWAY = NodeState("e1", 10, checked_at=100.0, lost_at=None)
LATE = NodeState("e1", 10, checked_at=100.0, lost_at=100.0 + CONTINUITY + 30)


@pytest.mark.parametrize(
    ("state", "seen", "expected"),
    [
        (None, view(head=42), Adopt(42)),  # first contact: start at the end
        (NodeState("e1", 10), view(head=10), UpToDate()),
        (NodeState("e1", 7), view(head=10), Replay()),
        (NodeState("e1", 7, (8, 9)), view(head=10, first=8), Replay()),  # 8 is still there
        (NodeState("e1", 3), view(head=10, first=5), PurgeAll(10, "trimmed")),  # 4 is gone
        (NodeState("e1", 12), view(head=10), PurgeAll(10, "back in time")),
        (WATCHED, view("e2", head=2), Adopt(0)),  # Redis restarted while we watched
        (AWAY, view("e2", head=2), PurgeAll(2, "lost while away")),
        (LATE, view("e2", head=2), PurgeAll(2, "lost while away")),
        (NodeState("", 0), view(head=5), PurgeAll(5, "damaged state file")),
    ],
)
def test_what_a_node_does_with_the_log(
    state: NodeState | None, seen: LogView, expected: Decision
) -> None:
    decision = decide(state, seen)
    if isinstance(expected, PurgeAll):
        assert isinstance(decision, PurgeAll) and decision.position == expected.position
    else:
        assert decision == expected


@pytest.mark.parametrize(
    ("purge", "is_ban"),
    [
        (Purge("prefix", "/a"), True),
        (Purge("tag", "t", soft=True), True),
        (Purge("all", "", soft=True), True),
        (Purge("all", ""), False),
        (Purge("url", "/a"), False),
    ],
)
def test_which_purges_are_always_bans(purge: Purge, is_ban: bool) -> None:
    """A node that already applied a logged purge from the purge log answers the fan-out
    with what it did then: a ban for these (cluster/nodes.py)."""
    assert purge.is_ban is is_ban
