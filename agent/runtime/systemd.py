"""systemd's readiness protocol (``Type=notify``): READY=1 once the agent serves, STOPPING=1 as it stops.

With ``Type=notify`` systemd holds a `systemctl reload` (and units ordered after the agent) until READY=1, so a
reload asked for right after `systemctl start` reaches an agent that can reload. Outside systemd there is no
NOTIFY_SOCKET and nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd", extra={"state": state, "error": str(exc)})
