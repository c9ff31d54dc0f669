"""The package's layers, top to bottom: the folder list is the architecture
(docs/architecture.md draws it).

A module imports only modules of its own folder and of the floors below its own; two
folders on one floor do not import each other. No import cycle, within a folder either.
``tests/unit/test_layers.py`` reads every module's imports (at module level, in functions
and under ``TYPE_CHECKING``) and fails on any import against this order. The root
modules (``__init__``, ``__main__``, ``wiring``, ``cli``) take the floor named after them.
"""

from __future__ import annotations

# Top to bottom. Each floor is a tuple of folders (or root modules) side by side.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),  # python -m wsgi_proxy
    ("cli",),  # the caching-proxy command
    ("server",),  # gunicorn: settings, hooks, worker class, thread pool
    ("__init__",),  # wsgi_proxy:app, the WSGI callable gunicorn loads
    ("wiring",),  # create_app: builds every object with its dependencies passed in
    ("flow",),  # one request through the layers below; the admin interface
    ("cluster",),  # several nodes as one cache: purge fan-out, purge log, shared tier
    ("request",),  # one request's state and body streams (the exchange)
    ("upstream", "store"),  # the origin client; the cache files
    ("ops",),  # metrics and the access log
    ("tuning",),  # every use of a library's private names, version-checked
    ("core",),  # pure: configuration, errors, model, headers, keys, RFC 9111 policy
    ("layers",),  # this list
)
