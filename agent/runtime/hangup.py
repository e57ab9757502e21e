"""SIGHUP during start-up: remembered, never fatal.

`systemctl reload` right after `systemctl start` (or a config reloader that fires as the pod starts) sends
SIGHUP while the agent is still importing, reading its config and building its sources, which can take seconds.
Python's default for SIGHUP ends the process, so ``kpi-agent run`` takes the signal over before anything slow
(``hold``, called before the command's modules are even imported), remembers it, and the runtime reloads once
it has started (``take``): whatever changed in the config meanwhile is applied, and nothing is lost.
"""

from __future__ import annotations

import signal
from types import FrameType

_requested = False


def _remember(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True


def hold() -> None:
    """From now on a SIGHUP asks for a reload instead of ending the process."""
    signal.signal(signal.SIGHUP, _remember)


def take() -> bool:
    """Whether a SIGHUP arrived since ``hold`` (or the last ``take``); the runtime's own handler must already be
    installed, so that none can arrive unseen in between."""
    global _requested
    requested, _requested = _requested, False
    return requested
