"""The ingest's gunicorn configuration, the one for ``privpoll up``, the image and the chart:
``gunicorn --config python:privpoll.web.gunicorn_conf``. What varies comes from the same
``PRIVPOLL_*`` environment as every other setting (``privpoll.settings``)."""

from privpoll.settings import Settings

_settings = Settings.from_env()

wsgi_app = "privpoll.web.app:create_app()"
bind = [_settings.http_addr]
# gevent: each worker serves its requests in greenlets on one thread, its NATS loop among them.
worker_class = _settings.ingest_worker_class
workers = _settings.ingest_workers
threads = _settings.ingest_threads
graceful_timeout = 5
accesslog = "-"
# The path only (invitation links carry their token in the query string), written without
# gunicorn's per-request table of every field.
logger_class = "privpoll.web.access_log.AccessLog"
# gunicorn 25.1+ opens a control socket at one path in the home folder by default, which each
# new server takes from the one before (privpoll up twice, the benchmark's servers, the
# tests'), and which a read-only root filesystem turns into a warning at every start; nothing
# of privpoll uses it.
control_socket_disable = True
