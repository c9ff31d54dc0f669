"""gunicorn settings for wsgi_proxy: `gunicorn -c gunicorn.conf.py wsgi_proxy:app`.

Server settings only; each can be changed with the WSGI_PROXY_* variable named in
wsgi_proxy/config.py (ServerConfig), and `-b`/`--workers` flags win over this file.

- worker_class gthread: a proxy mostly waits on the origin and the disk; threads hold many
  slow origin requests per process, and gunicorn's gthread poller keeps idle keep-alive
  connections off the threads. Hits are sent with sendfile, which gthread supports.
- workers 2, threads 32: 2 cores; 64 requests in flight at once across workers, so slow
  origins do not queue behind a small pool.
- keepalive 5 s: nginx in front reuses connections; idle ones are cheap under gthread.
- accesslog "-": to stdout (the journal under systemd), with the cache status and the
  origin's latency on each line; WSGI_PROXY_LOG_FORMAT=json for one JSON object a line.
- timeout 60 s: gthread workers heartbeat from their main loop, so a long download does not
  trip it; it only catches a stuck worker.
"""

from wsgi_proxy.config import ServerConfig
from wsgi_proxy.server import gunicorn_settings

_settings = gunicorn_settings(ServerConfig.from_env())
bind = _settings["bind"]
worker_class = _settings["worker_class"]
workers = _settings["workers"]
threads = _settings["threads"]
timeout = _settings["timeout"]
graceful_timeout = _settings["graceful_timeout"]
keepalive = _settings["keepalive"]
backlog = _settings["backlog"]
limit_request_line = _settings["limit_request_line"]
limit_request_fields = _settings["limit_request_fields"]
limit_request_field_size = _settings["limit_request_field_size"]
worker_connections = _settings["worker_connections"]
preload_app = _settings["preload_app"]
control_socket_disable = _settings["control_socket_disable"]
on_starting = _settings["on_starting"]
accesslog = _settings["accesslog"]
access_log_format = _settings["access_log_format"]
logger_class = _settings["logger_class"]
