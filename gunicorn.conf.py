"""gunicorn settings for wsgi_proxy: `gunicorn -c gunicorn.conf.py wsgi_proxy:app`.

Server settings only; each can be changed with the WSGI_PROXY_* variable named in
wsgi_proxy/config.py (ServerConfig), and `-b`/`--workers` flags win over this file.

Measured with the benchmark (tests/bench/run.py; figures in the README's Performance
section) where it says so; the rest is reasoned, not measured:
- worker_class gthread: a proxy mostly waits on the origin and the disk; threads hold many
  slow origin requests per process, and gunicorn's gthread poller keeps idle keep-alive
  connections off the threads. Hits are sent with sendfile, which gthread supports. (The
  shared benchmark found gevent no faster for a bare app and its p99 worse, and sync has no
  keep-alive.)
- workers 2: one per core. Measured against 3 workers x 16 threads and 4 x 12 (48 threads
  in each), one quick benchmark run each: HIT and pass-through ratios moved within the
  noise, each count winning some rows and losing others; the herd's slowest answer was
  0.58 s with 2, 0.70 s with 3 (over the 0.6 s target), and 50 slow misses of different
  URLs took 1.57 s with 4 (over 1.5 s: with 12 threads a worker that wins more than 24 of
  them serves three rounds). The shared benchmark found 4 workers of a bare app no faster
  than 2 on 2 cores either.
- threads 24: measured 4, 8, 16, 24, 32 and 64 per worker. A worker accepts whatever
  connections it wins, so a burst is not shared evenly: 50 concurrent misses of different
  URLs whose origin takes 0.5 s took 3.6 s with 4 threads and 2.1 s with 8; with 16 usually
  1.1 s, but 1.6 s once one worker got more than 32 of the 50 (three rounds of 0.5 s); with
  24 no worker can get three rounds' worth (49+) and it took 1.1 s. More threads lengthen
  the tail of cache hits under load, since every runnable thread contends for the GIL: HIT
  p99 at 64 connections was 1.2 to 1.8 times the bare app's with 16 and 24 (2.2 at 64 KiB
  in two runs), and 1.9 to 2.5 times with 32 and 64. Throughput did not change with the
  count beyond the noise. Raise it for an origin that is slow under many concurrent
  requests.
- keepalive 5 s: nginx in front reuses its connections (keepalive in deploy/nginx); idle
  ones cost no thread under gthread. Measured: 1 KiB HITs at 16 connections, 3 rounds,
  1,960 to 2,010 req/s kept alive against 1,440 to 1,500 with a new connection for each
  request. The 5 s is not measured: it outlasts nginx's upstream keepalive_timeout (4 s in
  deploy/nginx), so nginx, not gunicorn, closes an idle connection and never sends on one
  being closed. backlog 2048: bursts of new connections queue in the kernel instead of
  having their SYNs dropped. Measured with tests/bench/burst.py, 1,000 clients connecting
  at once, 6 rounds each over two runs: with a backlog of 64 the slowest was answered
  after 0.76 to 8.0 s (dropped SYNs retried a second later, then later still), with 2048
  after 0.53 to 0.67 s. The kernel caps it at net.core.somaxconn (4096 here).
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
