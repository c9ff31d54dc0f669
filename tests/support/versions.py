"""What the installed libraries give the proxy, for the tests that assert on it.

The tests run the proxies with their own interpreter (``sys.executable``) and their
``WSGI_PROXY_TUNING`` (support/proxy.py), so what ``wsgi_proxy.tuning`` says in the test
process is what the proxies run. Two markers (pyproject.toml; applied in tests/conftest.py)
skip a test, saying why, where what it asserts on is not there:

- ``@pytest.mark.tuned(library, what)``: ``what`` is a tuning of the seam
  (wsgi_proxy/tuning/) for ``library``, off on a version it was not verified on or with
  ``WSGI_PROXY_TUNING=off``: the library's own behaviour runs instead (docs/performance.md,
  "Where the tunings are off").
- ``@pytest.mark.gunicorn(version, what)``: ``what`` came with gunicorn ``version``; an
  older gunicorn does otherwise, and the proxy cannot make up for it (README, "Supported
  versions").
"""

from __future__ import annotations

from urllib.parse import unquote

from wsgi_proxy import tuning


def why_untuned(library: str, what: str) -> str | None:
    """Why the tuning ``what`` of ``library`` is off in this process; None where it is on."""
    if tuning.is_tuned(library):
        return None
    if not tuning.is_enabled():
        why = "WSGI_PROXY_TUNING=off"
    else:
        verified = ", ".join(tuning.VERIFIED[library])
        why = f"{library} {tuning.installed(library)} is not a verified version ({verified})"
    return f"tuned only: {what}; off here: {why}"


def why_too_old(version: str, what: str) -> str | None:
    """Why the installed gunicorn lacks ``what``, which came with gunicorn ``version``; None
    where it has it."""
    if tuning.is_at_least("gunicorn", version):
        return None
    return f"gunicorn {version}+ only: {what}; installed: {tuning.installed('gunicorn')}"


def is_forwarded_target(sent: str, seen: str) -> bool:
    """Whether the origin got the target ``sent`` as the proxy forwards it: byte for byte
    where the urllib3 tuning is on; elsewhere as urllib3's ``urlopen`` encodes it (bytes
    outside its set percent-encoded, ``\\`` as ``%5C``), so the same once decoded."""
    if tuning.is_tuned("urllib3"):
        return seen == sent
    return unquote(seen) == unquote(sent)
