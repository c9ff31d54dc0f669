"""The shipped monitoring files (deploy/grafana, deploy/prometheus): every metric they name
exists in a real `/metrics` scrape after traffic of every kind, and promtool (Debian
package `prometheus`, installed by tests/run.sh) accepts the rules, their unit tests and
every expression of the dashboard. Without promtool these tests fail: they do not skip."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.checks import poll
from support.origin import Origin, Recorded, Reply
from support.proxy import REPO, ProxyFactory, ProxyProcess, free_port
from support.scrapes import AUTH, TOKEN, Scrape, scrape

DASHBOARD = REPO / "deploy" / "grafana" / "wsgi-proxy-dashboard.json"
RULES = REPO / "deploy" / "prometheus"
NAME = re.compile(r"\bwsgi_proxy_[a-z0-9_]+\b")
CACHED = [("Cache-Control", "max-age=600")]


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' queries and its variables'."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard["templating"]["list"]:
        exprs.append(variable["definition"])
    return exprs


def rule_expressions(path: Path) -> Iterator[str]:
    """The ``expr:`` values of a rules file, block scalars included (no YAML parser among
    the test dependencies; the file's layout is the one promtool checks)."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, value = len(match.group(1)), match.group(2)
        if value not in ("|", ">", "|-", ">-"):
            yield value
            continue
        block = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        yield " ".join(block)


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def named_metrics() -> dict[str, set[str]]:
    """Each metric name the dashboard and the rules use, with where."""
    names: dict[str, set[str]] = {}
    sources = [(DASHBOARD.name, expr) for expr in dashboard_expressions()]
    sources += [(path.name, expr) for path in rule_files() for expr in rule_expressions(path)]
    for source, expr in sources:
        for name in NAME.findall(expr):
            names.setdefault(name, set()).add(source)
    return names


def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus (tests/run.sh installs it)")
    return found


def run_promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_files_name_the_metrics_an_on_call_engineer_needs() -> None:
    """The extraction the next test relies on finds something in each file, and the
    dashboard and the rules cover what the issue asks of them."""
    names = named_metrics()
    assert {DASHBOARD.name} | {p.name for p in rule_files()} <= set().union(*names.values())
    for expected in (
        "wsgi_proxy_requests_total",
        "wsgi_proxy_body_bytes_total",
        "wsgi_proxy_origin_seconds_bucket",
        "wsgi_proxy_origin_requests_total",
        "wsgi_proxy_cache_bytes",
        "wsgi_proxy_cache_limit_bytes",
        "wsgi_proxy_evictions_total",
        "wsgi_proxy_purges_total",
        "wsgi_proxy_pool_threads",
        "wsgi_proxy_request_duration_seconds_bucket",
        "wsgi_proxy_cache_errors_total",
        "wsgi_proxy_worker_exits_total",
    ):
        assert expected in names, expected
    for expr in dashboard_expressions():
        assert NAME.search(expr), f"an expression without a wsgi_proxy metric: {expr}"


def traffic(
    proxy_factory: ProxyFactory,
    origin: Origin,
    on_start: Callable[[ProxyProcess], object] | None = None,
) -> Scrape:
    """A proxy that has seen hits, misses, a pass, a stale answer, a revalidation, an error,
    a purge and evictions, and a scrape of it. ``on_start(proxy)`` runs before the traffic
    (a Prometheus to scrape it)."""
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN, "WSGI_PROXY_MAX_SIZE": "200000"})
    if on_start is not None:
        on_start(proxy)

    def etagged(record: Recorded) -> Reply:
        fields = [("Cache-Control", "max-age=0"), ("ETag", '"e1"')]
        if record.header("If-None-Match") == '"e1"':
            return Reply(304, headers=fields)
        return Reply(200, headers=fields, body=b"etagged")

    hit = origin.route("/mon/hit", headers=CACHED, body=b"h")
    stale = origin.route(
        "/mon/swr",
        # Stale on arrival (Age over max-age), so the next request is answered stale.
        headers=[("Cache-Control", "max-age=60, stale-while-revalidate=600"), ("Age", "100")],
        body=b"s",
    )
    revalidated = origin.respond("/mon/etag", etagged)
    passed = origin.route("/mon/pass", headers=[("Cache-Control", "no-store")], body=b"p")
    for path in (hit, hit, stale, stale, revalidated, revalidated, passed):
        assert proxy.get(path).status == 200
    uncached = origin.route("/mon/none", headers=CACHED, body=b"n")
    assert proxy.get(uncached, [("Cache-Control", "only-if-cached")]).status == 504
    assert proxy.request("POST", passed, body=b"x").status == 200
    assert proxy.request("POST", f"/_wsgi_proxy/purge?url={hit}", AUTH).status == 200
    for i in range(12):  # past the size limit: evictions
        assert (
            proxy.get(origin.route(f"/mon/big/{i}", headers=CACHED, body=b"b" * 30_000)).status
            == 200
        )
    return _settled(proxy)


def _settled(proxy: ProxyProcess) -> Scrape:
    """A scrape once the evictions, the pools' report and the durations are in."""
    last: list[Scrape] = []

    def ready() -> bool:
        last[:] = [scrape(proxy)]
        found = last[0]
        return (
            found.get("wsgi_proxy_evictions_total") > 0
            and found.get("wsgi_proxy_pool_threads") > 0
            and found.total("wsgi_proxy_request_duration_seconds_count") > 0
        )

    poll(ready, 15, interval=0.3)
    return last[0]


def test_every_metric_of_the_dashboard_and_the_rules_is_in_metrics(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    found = traffic(proxy_factory, origin)
    exposed = found.names()
    missing = {
        name: sorted(where) for name, where in named_metrics().items() if name not in exposed
    }
    assert not missing, f"named but not exposed: {missing}\n{found.text}"


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    files = [str(path.relative_to(RULES)) for path in rule_files()]
    assert files, "no rules in deploy/prometheus"
    checked = run_promtool("check", "rules", *files)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    """tests/*.yml: each alert fires on its failure and not on a healthy instance beside."""
    tests = sorted(str(path.relative_to(RULES)) for path in (RULES / "tests").glob("*.yml"))
    assert tests
    tested = run_promtool("test", "rules", *tests)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """Grafana's variables replaced as Grafana would, each expression is loaded by promtool
    as a recording rule, which parses it."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(dashboard_expressions()):
        promql = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        if promql.startswith("label_values("):
            promql = promql[len("label_values(") :].split(",")[0]
        rules += [f"      - record: dashboard_expr_{i}", f"        expr: {json.dumps(promql)}"]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text("\n".join(rules) + "\n")
    checked = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_is_an_importable_grafana_export() -> None:
    """What Grafana's import reads: the Prometheus input it asks for, the schema version,
    panels with unique ids inside the 24-column grid, every query on the input's source."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] and dashboard["title"] and dashboard["id"] is None
    inputs = {item["name"]: item for item in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == source for target in panel["targets"])
    assert all(v["datasource"] == source for v in dashboard["templating"]["list"])


# The window every rate() of the dashboard gets in place of Grafana's $__rate_interval.
WINDOW = "60s"


class Prometheus:
    """A real Prometheus server (Debian package prometheus, beside promtool) scraping one
    proxy every second, on a free loopback port, its data in a scratch folder."""

    def __init__(self, proxy: ProxyProcess, folder: Path) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            pytest.fail("prometheus is missing: apt-get install prometheus (tests/run.sh)")
        (folder / "token").write_text(TOKEN)
        (folder / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: wsgi_proxy\n"
            "    metrics_path: /_wsgi_proxy/metrics\n"
            f"    authorization: {{credentials_file: {folder / 'token'}}}\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{proxy.port}']}}]\n"
        )
        self.port = free_port()
        self.log = (folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def query(self, promql: str) -> list[Any]:
        """The result of an instant query now; fails on an error answer."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", (promql, body)
        result: list[Any] = body["data"]["result"]
        return result

    def has(self, promql: str) -> bool:
        try:
            return bool(self.query(promql))
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def test_every_dashboard_query_finds_series_in_a_real_prometheus(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """A real Prometheus scrapes the proxy through traffic of every kind; then each of the
    dashboard's queries (Grafana's variables replaced) answers at least one series: the
    label names and values it filters on are the ones the proxy writes. The alert rules'
    expressions are evaluated too (they may rightly find nothing on a healthy proxy)."""
    proxy_holder: list[Prometheus] = []

    def start(proxy: ProxyProcess) -> None:
        """Prometheus, once it has scraped the proxy twice: rate() then sees the growth."""
        proxy_holder.append(Prometheus(proxy, tmp_path))
        scraped = 'count_over_time(up{job="wsgi_proxy"}[60s]) >= 2 and up == 1'
        assert poll(lambda: proxy_holder[0].has(scraped), 30), "Prometheus never scraped"

    try:
        found = traffic(proxy_factory, origin, on_start=start)
        prometheus = proxy_holder[0]
        # Three scrapes after the traffic, so that every series it made has three samples.
        ended = time.monotonic()

        def scraped_since() -> bool:
            window = int(time.monotonic() - ended)
            return window > 0 and prometheus.has(
                f'count_over_time(up{{job="wsgi_proxy"}}[{window}s]) >= 3'
            )

        assert poll(scraped_since, 30), found.text
        empty = []
        for expr in dashboard_expressions():
            promql = expr.replace("$__rate_interval", WINDOW).replace("$instance", ".*")
            if promql.startswith("label_values("):
                promql = promql[len("label_values(") :].split(",")[0]
            if not prometheus.query(promql):
                empty.append(promql)
        assert not empty, "queries without a series:\n" + "\n".join(empty)
        for path in rule_files():
            for expr in rule_expressions(path):
                prometheus.query(expr)
    finally:
        for started in proxy_holder:
            started.stop()
