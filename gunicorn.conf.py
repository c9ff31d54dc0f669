"""gunicorn settings for wsgi_proxy: `gunicorn -c gunicorn.conf.py wsgi_proxy:app`.

Server settings only. Each value comes from its WSGI_PROXY_* variable (README,
Configuration), and flags such as -b win over this file. `caching-proxy` starts gunicorn
with the same settings. The measurements behind the values: docs/performance.md.
"""

from wsgi_proxy.core.server_config import ServerConfig
from wsgi_proxy.server.settings import gunicorn_settings

_settings = gunicorn_settings(ServerConfig.from_env())
# The listen address; nginx in front connects here.
bind = _settings["bind"]
# gthread with the proxy's thread pool: threads hold slow origin requests, and the
# poller holds idle connections and unfinished request heads without a thread.
worker_class = _settings["worker_class"]
# 2, one per core: with 3 or 4, a herd target was missed.
workers = _settings["workers"]
# 64 hold a herd of 50 slow requests landing in one worker; 4 of them run at once.
threads = _settings["threads"]
# 60 s; only a stuck worker trips it: the main loop heartbeats during long downloads.
timeout = _settings["timeout"]
# 30 s for in-flight requests to finish on stop or reload.
graceful_timeout = _settings["graceful_timeout"]
# 5 s outlasts nginx's upstream keepalive_timeout (4 s): nginx closes idle ones first.
keepalive = _settings["keepalive"]
# 2048: a burst of new connections queues in the kernel instead of losing its SYNs.
backlog = _settings["backlog"]
# A socket per worker: the kernel spreads new connections, and HIT p99s are shorter.
reuse_port = _settings["reuse_port"]
# Longest request line (414 above it).
limit_request_line = _settings["limit_request_line"]
# Most request header fields (431 above it).
limit_request_fields = _settings["limit_request_fields"]
# Longest request header field (431 above it).
limit_request_field_size = _settings["limit_request_field_size"]
# 1000 per worker, waiting heads and kept-alive ones included; more wait in the backlog.
worker_connections = _settings["worker_connections"]
# None: the scheme is the proxy's to decide, from the trusted proxy in front only.
secure_scheme_headers = _settings["secure_scheme_headers"]
# None either: no request field sets SCRIPT_NAME or the like in the environ.
forwarder_headers = _settings["forwarder_headers"]
# "*": with nothing to trust a peer with, gunicorn need not parse its address per request.
forwarded_allow_ips = _settings["forwarded_allow_ips"]
# Nothing opens a socket, file or lock before the fork.
preload_app = _settings["preload_app"]
# gunicorn's control socket (25.1+; an older gunicorn ignores the name) has one path per
# user: two instances would share it.
control_socket_disable = _settings["control_socket_disable"]
# Checks the settings and the cache folder in the master, before any worker forks.
on_starting = _settings["on_starting"]
# One shared socket where a socket per worker cannot work (Unix, systemd sockets).
on_reload = _settings["on_reload"]
# The master forgets a dead worker's thread-pool gauges.
child_exit = _settings["child_exit"]
# Nothing: gunicorn's own logs every request at debug level, as the access log does.
pre_request = _settings["pre_request"]
# Starts the cache manager process, which keeps the cache under WSGI_PROXY_MAX_SIZE.
when_ready = _settings["when_ready"]
# Stops it.
on_exit = _settings["on_exit"]
# stdout (the journal under systemd); none with WSGI_PROXY_LOG_FORMAT=off.
accesslog = _settings["accesslog"]
# Combined format with the cache status, the origin's time and Cache-Status.
access_log_format = _settings["access_log_format"]
# The text or JSON access log (WSGI_PROXY_LOG_FORMAT).
logger_class = _settings["logger_class"]
