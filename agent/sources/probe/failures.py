"""What went wrong in a probe, as a result label and words an operator can act on, for the exceptions every
network prober meets (a kind words its own library's errors first: ``ProberKind.explain``)."""

from __future__ import annotations

import errno
import os
import ssl

# Exceptions that are a target's fault when a probe raises them; anything else is a bug of the agent.
TARGET_FAULTS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ssl.SSLError, ValueError, EOFError)


def explain(exc: BaseException, timeout: float) -> tuple[str, str]:
    """(result, reason) for an exception a probe raised."""
    if isinstance(exc, TimeoutError):
        return "timeout", f"no complete answer within {timeout:g}s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_error", f"certificate not accepted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return "tls_error", f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused", "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection_error", "connection reset by the target"
    if isinstance(exc, EOFError) or isinstance(exc, OSError) and exc.errno is None and "closed" in str(exc):
        return "connection_error", "the target closed the connection"
    if isinstance(exc, OSError):
        code = exc.errno
        reason = os.strerror(code) if code else str(exc)
        if code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "connection_error", f"unreachable: {reason}"
        return "connection_error", reason
    return "connection_error", f"{type(exc).__name__}: {exc}"
