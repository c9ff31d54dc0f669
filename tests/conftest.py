"""Fixtures for the integration tests (the harness itself lives in tests/support/).

- `origin`: the session's recording origin, seen through a prefix of this test's own, so
  routes, cache entries and counts never mix between tests;
- `raw_origin`: a socket server writing exact bytes, for broken responses;
- `proxy`: one gunicorn (two workers) shared by the tests that need no settings of their
  own, in front of the session origin; checked alive before each test;
- `proxy_factory`: more proxies for this test (own settings, own or shared cache folder,
  the CLI instead of gunicorn), all stopped at teardown even when the test fails;
- the markers `tuned` and `gunicorn` (support/versions.py): a test that asserts on a tuning
  of the seam, or on what a gunicorn release brought, is skipped, saying why, where it is
  not there.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.origin import Origin, OriginServer
from support.proxy import ProxyFactory, ProxyProcess
from support.raw_origin import RawOrigin
from support.versions import why_too_old, why_untuned

_prefixes = itertools.count(1)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("tuned"):
        reason = why_untuned(*marker.args)
        if reason is not None:
            pytest.skip(reason)
    for marker in item.iter_markers("gunicorn"):
        reason = why_too_old(*marker.args)
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def origin_server() -> Iterator[OriginServer]:
    with OriginServer.running() as server:
        yield server


@pytest.fixture
def origin(origin_server: OriginServer) -> Origin:
    return origin_server.view(f"/t{next(_prefixes)}")


@pytest.fixture
def raw_origin() -> Iterator[RawOrigin]:
    with RawOrigin.running() as server:
        yield server


@pytest.fixture(scope="session")
def _shared_proxy(
    origin_server: OriginServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    factory = ProxyFactory(origin_server.url, tmp_path_factory.mktemp("shared-proxy"))
    try:
        yield factory()
    finally:
        factory.stop_all()


@pytest.fixture
def proxy(_shared_proxy: ProxyProcess) -> ProxyProcess:
    _shared_proxy.assert_alive()
    return _shared_proxy


@pytest.fixture
def proxy_factory(origin_server: OriginServer, tmp_path: Path) -> Iterator[ProxyFactory]:
    factory = ProxyFactory(origin_server.url, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
