"""The discovery seam, in the spirit of Prometheus's ``discovery.Discoverer``: a discoverer runs until
cancelled and reports what it finds through ``up``, one ``Update`` per origin (a target file, an endpoint)
each time it looks. Any consumer (a prober kind, a future scraper) runs discoverers the same way and keeps the
last good target groups of each origin (``agent.discovery.manager``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.discovery.targetgroup import TargetGroup


@dataclass(frozen=True)
class Update:
    """What one look at one origin gave.

    - ``groups`` set, ``error`` None: the origin's target groups now (replacing its previous ones);
    - ``groups`` None, ``error`` set: the look failed; the origin's last good groups stay;
    - both None: the origin is gone (a target file deleted); its groups go with it.
    """

    mechanism: str  # static | file | http
    origin: str  # the file path or URL ("" for static_configs)
    groups: list[TargetGroup] | None = None
    error: str | None = None


Up = Callable[[Update], None]


class Discoverer(Protocol):
    mechanism: str

    async def run(self, up: Up) -> None:
        """Look for targets until cancelled, calling ``up`` after every look at an origin. Must not raise for
        a fault of what it reads (a bad file, a dead endpoint): that is an ``Update`` with an error."""
        ...


class StaticDiscoverer:
    """``static_configs``: one look, at start."""

    mechanism = "static"

    def __init__(self, groups: tuple[TargetGroup, ...]):
        self.groups = groups

    async def run(self, up: Up) -> None:
        up(Update(self.mechanism, "", list(self.groups)))
