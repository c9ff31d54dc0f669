"""Several nodes as one cache: nginx shards requests over them (deploy/cluster/); this file
sends purges to all of them and runs the node's side of the shared tier.

Invariants:
- A purge issued on any node's admin interface, or with the CLI, is logged first (with the
  shared tier on, so that a node that misses it catches up from the purge log), then sent
  to every node of ``WSGI_PROXY_PEERS`` at once. The answer says how many nodes applied
  it and which failed.
- A purge that arrives with ``PEER_HEADER`` is applied on this node only and never sent
  on: no loops.
- Fan-out requests carry the admin token; nodes without one must allow the peers'
  addresses (``WSGI_PROXY_ADMIN_ALLOW``).
- Without ``WSGI_PROXY_PEERS`` and ``WSGI_PROXY_REDIS_URL`` nothing here runs: a purge stays
  on this node, as on a single machine.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from wsgi_proxy.cluster.purge_log import INTERVAL, PurgeLog
from wsgi_proxy.cluster.shared_tier import PEER_HEADER, RedisLink, SharedTier
from wsgi_proxy.core.config import Config
from wsgi_proxy.store import purge as purging
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.purge import BANNED, Purge, PurgeResult

if TYPE_CHECKING:
    from urllib3 import PoolManager

    from wsgi_proxy.ops.metrics import Metrics

log = logging.getLogger(__name__)

FANOUT_CONNECT_TIMEOUT = 2.0
# A purge answers at once (a ban for tags and prefixes), but the node may be busy.
FANOUT_READ_TIMEOUT = 120.0
CATCH_UP_WAIT = 10.0
# The status page's view of the other nodes (node_states).
NODE_STATE_TIMEOUT = 1.0
NODE_STATE_TTL = 5.0


@dataclass(frozen=True, slots=True)
class NodeResult:
    """One node's answer: how many stored responses it purged, that it recorded a ban
    (store/bans.py: no count yet), or why it failed."""

    node: str
    purged: int | None
    error: str | None = None
    banned: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of a purge sent to every node. ``log`` is ``off`` (no shared tier),
    ``pending`` (Redis unavailable: logged when it is back) or the sequence number."""

    purge: Purge
    results: tuple[NodeResult, ...]
    log: str

    @property
    def failed(self) -> list[NodeResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def purged(self) -> int:
        return sum(r.purged or 0 for r in self.results)

    def format(self) -> str:
        applied = len(self.results) - len(self.failed)
        banned = [r for r in self.results if r.banned]
        on = f"on {applied} of {len(self.results)} nodes"
        if not banned:
            lines = [f"purged {self.purged} {on}"]
        elif len(banned) == applied:
            lines = [f"banned {on}: entries stop being served now; removed in the background"]
        else:
            lines = [f"purged {self.purged} and banned {on}"]
        lines += [
            f"{r.node}: failed: {r.error}" if r.error
            else f"{r.node}: banned" if r.banned
            else f"{r.node}: purged {r.purged}"
            for r in self.results
        ]  # fmt: skip
        if self.log == "pending":
            lines.append("purge log: pending (Redis unavailable), logged when it is back")
        elif self.log != "off":
            lines.append(f"purge log: {self.log}")
        if self.failed:
            lines.append(
                "the failed nodes apply it from the purge log when they are back"
                if self.log != "off"
                else "the failed nodes did not get it: purge again when they are back"
            )
        return "\n".join(lines)


class Cluster:
    """This node's view of the cluster. One per process (worker or CLI)."""

    def __init__(self, config: Config, store: Store, metrics: Metrics | None = None) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.shared: SharedTier | None = None
        self.purge_log: PurgeLog | None = None
        if config.redis_url:
            link = RedisLink(config.redis_url)
            self.shared = SharedTier(config, link, metrics)
            self.purge_log = PurgeLog(link, store, config.origin.url)
        self._http: PoolManager | None = None
        self._stop = threading.Event()
        self._states: tuple[float, list[dict[str, str]]] | None = None  # (when, node_states)
        self._states_lock = threading.Lock()

    @property
    def is_clustered(self) -> bool:
        return bool(self.config.peers) or self.shared is not None

    # ---- the shared tier's background work ----------------------------------------------

    def start(self) -> None:
        """Catch up with the purge log before serving, then keep up in the background."""
        if self.purge_log is None:
            return
        try:
            self.purge_log.tick(wait=CATCH_UP_WAIT, grace=0.0)
        except Exception:  # serving must not depend on it: the thread tries again
            log.exception("catching up with the purge log failed")
        threading.Thread(target=self._run, name="wsgi_proxy-cluster", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        assert self.shared is not None and self.purge_log is not None  # noqa: S101
        next_tick = time.monotonic() + INTERVAL
        while not self._stop.is_set():
            try:
                self.shared.flush_tags(wait=max(0.0, next_tick - time.monotonic()))
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + INTERVAL
                    self.purge_log.tick()
            except Exception:  # the thread must outlive any one failure
                log.exception("cluster background work failed")
                self._stop.wait(INTERVAL)

    # ---- purges -------------------------------------------------------------------------

    def apply_local(
        self, purge: Purge, epoch: str | None = None, seq: int | None = None
    ) -> PurgeResult:
        """Apply ``purge`` here; a logged one (``epoch``, ``seq``) is then skipped on replay,
        or not applied again if the replay already did."""
        if self.purge_log is not None and epoch and seq:
            done = self.purge_log.applied_count(epoch, seq)
            if done is not None:  # the replay applied it: what it said then
                return PurgeResult(done, banned=purge.is_ban)
        result: PurgeResult = purging.apply(self.store, self.config.origin.url, purge)
        if self.purge_log is not None and epoch and seq:
            self.purge_log.record_ahead(epoch, seq)
        if self.metrics is not None:
            self.metrics.count_purge(purge.label, result.purged)
        log.info("purge %s %r: %s", purge.label, purge.value, result.format())
        return result

    def broadcast(self, purge: Purge, issuer: str) -> Report:
        """Log ``purge``, then apply it on every node; ``issuer`` names who asked."""
        logged = self.purge_log.append(purge) if self.purge_log is not None else None
        state = "pending" if logged is None else str(logged[1])
        if self.purge_log is None:
            state = "off"
        peers = self.config.peers
        if not peers:
            results: tuple[NodeResult, ...] = (self._local(purge, logged),)
        else:
            with ThreadPoolExecutor(max_workers=len(peers), thread_name_prefix="fanout") as pool:
                futures = [pool.submit(self._send, peer, purge, logged, issuer) for peer in peers]
                results = tuple(f.result() for f in futures)
        if purge.kind == "tag" and self.shared is not None and not any(r.error for r in results):
            self.shared.forget_tag(purge.value)
        report = Report(purge, results, state)
        log.info("purge %s %r from %s: %s", purge.label, purge.value, issuer,
                 report.format().replace("\n", "; "))  # fmt: skip
        return report

    def _local(self, purge: Purge, logged: tuple[str, int] | None) -> NodeResult:
        result = self.apply_local(purge, *(logged or (None, None)))
        return NodeResult(self.config.node_url or "this node", result.purged, banned=result.banned)

    def _send(
        self, peer: str, purge: Purge, logged: tuple[str, int] | None, issuer: str
    ) -> NodeResult:
        if peer == self.config.node_url:
            try:
                return replace(self._local(purge, logged), node=peer)
            except OSError as exc:
                return NodeResult(peer, None, f"cannot purge here: {exc}")
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        query = purge.query()
        if logged is not None:
            query += f"&epoch={logged[0]}&seq={logged[1]}"
        # Purges are rare: no idle connection should hold up a node's graceful stop.
        headers = {PEER_HEADER: issuer, "Connection": "close"}
        if self.config.admin_token:
            headers["Authorization"] = f"Bearer {self.config.admin_token}"
        url = f"{peer}{self.config.admin_prefix}/purge?{query}"
        try:
            resp = self._client().request("POST", url, headers=headers)
        except HTTPError as exc:
            return NodeResult(peer, None, _reason(exc))
        text = resp.data.decode("utf-8", "replace").strip()
        words = text.split()
        if resp.status == 200 and len(words) == 2 and words[0] == "purged" and words[1].isdigit():
            return NodeResult(peer, int(words[1]))
        if resp.status == 200 and text == BANNED:
            return NodeResult(peer, 0, banned=True)
        return NodeResult(peer, None, f"HTTP {resp.status}: {text[:100]}")

    def _client(self) -> PoolManager:
        if self._http is None:
            from urllib3 import PoolManager, Timeout  # noqa: PLC0415

            self._http = PoolManager(
                num_pools=max(4, len(self.config.peers)),
                timeout=Timeout(connect=FANOUT_CONNECT_TIMEOUT, read=FANOUT_READ_TIMEOUT),
                retries=False,
            )
        return self._http

    def node_states(self) -> list[dict[str, str]]:
        """Each node's state for the status page: this node's ``status`` rows, then each
        peer's, asked of its ``/cluster`` (with the token, ``NODE_STATE_TIMEOUT`` each, all
        at once), or why it did not answer. Kept ``NODE_STATE_TTL`` seconds, so that pages
        polling every second do not each ask every node."""
        with self._states_lock:
            kept = self._states
            if kept is not None and time.monotonic() - kept[0] < NODE_STATE_TTL:
                return kept[1]
        here = self.config.node_url or "(this node)"
        states = [{"node": here, "state": "this node", **dict(self.status())}]
        peers = [peer for peer in self.config.peers if peer != self.config.node_url]
        if peers:
            with ThreadPoolExecutor(len(peers), thread_name_prefix="node-state") as pool:
                states += pool.map(self._peer_state, peers)
        with self._states_lock:
            self._states = (time.monotonic(), states)
        return states

    def _peer_state(self, peer: str) -> dict[str, str]:
        from urllib3 import Timeout  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        headers = {"Connection": "close"}
        if self.config.admin_token:
            headers["Authorization"] = f"Bearer {self.config.admin_token}"
        url = f"{peer}{self.config.admin_prefix}/cluster"
        timeout = Timeout(connect=NODE_STATE_TIMEOUT, read=NODE_STATE_TIMEOUT)
        try:
            resp = self._client().request("GET", url, headers=headers, timeout=timeout)
        except HTTPError as exc:
            return {"node": peer, "state": f"unreachable: {_reason(exc)}"}
        text = resp.data.decode("utf-8", "replace")
        if resp.status != 200:
            return {"node": peer, "state": f"HTTP {resp.status}: {text.strip()[:100]}"}
        return {**parse_rows(text), "node": peer, "state": "up"}

    def status(self) -> list[tuple[str, str]]:
        """(name, value) rows for the admin interface's ``/cluster``."""
        rows = [("node", self.config.node_url or "(unnamed)"),
                ("peers", ", ".join(self.config.peers) or "(none)")]  # fmt: skip
        if self.purge_log is None or self.shared is None:
            return [*rows, ("redis", "off")]
        alive = self.shared.link.call("status", lambda c: c.ping())
        state = self.purge_log.load()
        rows += [
            ("redis", "up" if alive else "unavailable"),
            ("purge_log_epoch", state.epoch if state else "(none)"),
            ("purge_log_applied", str(state.applied) if state else "(none)"),
            ("purge_log_pending", str(self.purge_log.pending_count())),
        ]
        return rows


def parse_rows(text: str) -> dict[str, str]:
    """The ``name: value`` lines of ``/cluster``'s answer (``status``' rows) as a dict."""
    rows = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            rows[name.strip()] = value.strip()
    return rows


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:200]
