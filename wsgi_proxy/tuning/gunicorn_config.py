"""gunicorn's settings object, each setting looked up once (a speed tuning)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from gunicorn import config as gunicorn_config


class SettledConfig(gunicorn_config.Config):  # type: ignore[misc]
    """gunicorn's settings object, each setting looked up once: gunicorn reads its settings
    about 25 times per request, each through ``Config.__getattr__`` (a miss of the normal
    lookup, then the setting's ``get()``): about a microsecond each (timeit), 2.4 for
    ``sendfile``, which also looks at the environment. A setting read is kept in the
    object's ``__dict__``, where the next read finds it; ``set`` forgets what was kept.
    A worker's settings do not change after its fork (a reload starts new workers)."""

    def __getattr__(self, name: str) -> Any:
        value = super().__getattr__(name)
        self.__dict__[name] = value  # not setattr: Config refuses it for a setting's name
        return value

    def set(self, name: str, value: Any) -> None:
        for kept in (name, "is_ssl", "sendfile"):
            self.__dict__.pop(kept, None)
        super().set(name, value)

    @cached_property
    def is_ssl(self) -> Any:
        return gunicorn_config.Config.is_ssl.fget(self)

    @cached_property
    def sendfile(self) -> Any:
        return gunicorn_config.Config.sendfile.fget(self)


def settle(cfg: Any) -> None:
    """Make ``cfg`` (gunicorn's ``Config``, nothing else) a ``SettledConfig``, in place:
    every holder of it (the worker, its logger, each request) reads it the faster way."""
    if type(cfg) is gunicorn_config.Config:
        cfg.__class__ = SettledConfig
