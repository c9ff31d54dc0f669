"""The integration harness: a programmable counting origin, a raw-bytes origin, gunicorn
running the proxy as a subprocess, and an HTTP client that returns exact bytes."""
