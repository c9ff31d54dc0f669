"""gunicorn settings for wsgi_proxy: `gunicorn -c gunicorn.conf.py wsgi_proxy:app`.

Server settings only; each can be changed with the WSGI_PROXY_* variable named in
wsgi_proxy/config.py (ServerConfig), and `-b`/`--workers` flags win over this file.

Measured with the benchmark (tests/bench/run.py; figures in the README's Performance
section) where it says so; the rest is reasoned, not measured:
- worker_class wsgi_proxy.server.settings.ProxyWorker: gunicorn's gthread worker with the proxy's
  thread pool (wsgi_proxy/pool.py). A proxy mostly waits on the origin and the disk; threads
  hold many slow origin requests per process, and gunicorn's gthread poller keeps idle
  keep-alive connections off the threads. No thread waits on a request head either
  (wsgi_proxy/gathering.py): a thread looks at what has come, and a head not whole yet
  waits in the poller, within WSGI_PROXY_CLIENT_TIMEOUT (else 408), so clients sending
  theirs slowly hold no thread (gunicorn alone reads each head on a thread, without a
  time limit); connections to close wait there for their client's end, without stopping
  the loop. Hits are sent
  with sendfile, which gthread supports. Its responses are written by
  wsgi_proxy/response.py: gunicorn's writer with the Date field formatted once a second,
  the head sent with the body, each field line checked once, and sendfile called directly;
  gunicorn's settings are read once per worker (SettledConfig, wsgi_proxy/server.py); the
  origin's response heads are parsed by wsgi_proxy/head_parser.py, not by the email
  package (each measured side by side, README). (The shared benchmark found gevent no
  faster for a bare app and its p99 worse, and sync has no keep-alive and reads each head
  on its only thread.)
- workers 2: one per core. Measured before the pool (plain gthread) against 3 workers x 16
  threads and 4 x 12 (48 threads in each), one quick benchmark run each: HIT and
  pass-through ratios moved within the noise, each count winning some rows and losing
  others; the herd's slowest answer was 0.58 s with 2, 0.70 s with 3 (over the 0.6 s
  target), and 50 slow misses of different URLs took 1.57 s with 4 (over 1.5 s: with 12
  threads a worker that wins more than 24 of them serves three rounds). The shared
  benchmark found 4 workers of a bare app no faster than 2 on 2 cores either.
- threads 64, of which 4 active (WSGI_PROXY_ACTIVE_THREADS): the pool starts a request when
  fewer than 4 run in the worker; one waiting on the origin or on another request's fetch,
  or running for over 50 to 70 ms, does not count.
  Measured before the pool, with plain gthread: a worker accepts whatever connections it
  wins, so 50 concurrent misses of different URLs whose origin takes 0.5 s took 3.6 s with 4
  threads, 2.1 s with 8, 1.1 to 1.6 s with 16 and 1.1 s with 24; but every running thread
  contends for the GIL, and the HIT p99 at 64 connections was 1.2 to 2.6 times the bare
  app's with 16 and 24 threads and 1.9 to 2.5 with 32 and 64. With the pool, 50 slow misses
  took 0.60 to 0.64 s, and side by side with 24 plain threads 1 KiB HITs at 64 connections
  had 1.01 to 1.18 times the req/s and a p99 of 67 to 103 ms against 125 to 152. 64 threads
  hold 50 slow requests landing in one worker; raise it for more concurrent slow requests.
  Active threads 2, 4 and 8 side by side: 8 had the longest HIT p99 in 8 of 9 rounds, 2 and
  4 were within the noise; 4 is the bare app's count (the benchmark's ceiling).
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
- reuse_port on (WSGI_PROXY_REUSE_PORT; TCP addresses only, see wsgi_proxy/server.py): each
  worker listens on its own socket and the kernel spreads new connections between them by
  a hash. With one shared socket the worker awake when a burst of connections opens takes
  most of them (splits of 5 and 59 of wrk's 64 were seen), and those wait on one process
  while the other idles. Measured side by side at 64 connections, 5 rounds: the proxy's
  1 KiB and 64 KiB HIT p99s 0.98 and 1.02 times the bare app's (without reuse_port)
  against 1.23 and 1.41 without it, req/s unchanged (0.90 and 0.89 against 0.87 and 0.88);
  with both on it, 1.18 and 1.20 (the bare app's own p99 gains too, 1.30 and 1.13 times
  shorter), and the proxy's 1 KiB p99 stayed within 50.6 to 53.0 ms over the rounds
  against 36 to 74 ms without. A stopping worker accepts for 1 s more while a reload's
  new workers bind, then closes its socket, so that new connections go to the others
  (tests/integration/test_listening.py; deploy/sysctl for what was queued on it).
- accesslog "-": to stdout (the journal under systemd), with the cache status and the
  origin's latency on each line; WSGI_PROXY_LOG_FORMAT=json for one JSON object a line.
- child_exit: the master forgets a dead worker's thread-pool gauges (README, Metrics), which
  are summed over the live workers. on_starting checks the settings before any worker forks.
- timeout 60 s: gthread workers heartbeat from their main loop, so a long download does not
  trip it; it only catches a stuck worker.
"""

from wsgi_proxy.core.config import ServerConfig
from wsgi_proxy.server.settings import gunicorn_settings

_settings = gunicorn_settings(ServerConfig.from_env())
bind = _settings["bind"]
worker_class = _settings["worker_class"]
workers = _settings["workers"]
threads = _settings["threads"]
timeout = _settings["timeout"]
graceful_timeout = _settings["graceful_timeout"]
keepalive = _settings["keepalive"]
backlog = _settings["backlog"]
reuse_port = _settings["reuse_port"]
limit_request_line = _settings["limit_request_line"]
limit_request_fields = _settings["limit_request_fields"]
limit_request_field_size = _settings["limit_request_field_size"]
worker_connections = _settings["worker_connections"]
secure_scheme_headers = _settings["secure_scheme_headers"]
preload_app = _settings["preload_app"]
control_socket_disable = _settings["control_socket_disable"]
on_starting = _settings["on_starting"]
on_reload = _settings["on_reload"]
child_exit = _settings["child_exit"]
accesslog = _settings["accesslog"]
access_log_format = _settings["access_log_format"]
logger_class = _settings["logger_class"]
