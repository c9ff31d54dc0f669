"""``python -m wsgi_proxy`` is the ``caching-proxy`` command."""

from wsgi_proxy.cli import main

raise SystemExit(main())
