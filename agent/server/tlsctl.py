"""Two OpenSSL settings exporter-toolkit's web config needs and Python's ssl module does not expose.

- ``RequireAnyClientCert`` (Go: require a client certificate, do not verify it): OpenSSL's SSL_VERIFY_PEER |
  SSL_VERIFY_FAIL_IF_NO_PEER_CERT with a verify callback that accepts every chain. Python offers only modes
  that verify against loaded CAs.
- ``curve_preferences``: SSL_CTX_set1_groups_list (Python has only set_ecdh_curve, one curve, TLS 1.2).

Both act on the SSL_CTX of an ``ssl.SSLContext`` through the libssl the ``_ssl`` module itself loaded. The
SSL_CTX pointer is read from the context object and checked against values Python reports before anything is
set, so a Python whose layout differs gets a clear error instead of a wrong setting.
"""

from __future__ import annotations

import ctypes
import ssl
import sys

_SSL_VERIFY_PEER, _SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x01, 0x02
_SSL_CTRL_SET_GROUPS_LIST = 92
_VerifyCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


class Unsupported(RuntimeError):
    pass


def _libssl() -> ctypes.CDLL:
    """The libssl already mapped into this process by the _ssl module (dlopen returns the same handle)."""
    import _ssl  # noqa: F401 - make sure it is loaded

    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libssl.so" in path:
                return ctypes.CDLL(path)
    raise Unsupported("cannot find the libssl that Python's ssl module uses")


_lib: ctypes.CDLL | None = None
_ACCEPT_ANY = _VerifyCallback(lambda preverify_ok, store: 1)  # kept alive for as long as contexts use it


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = _libssl()
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VerifyCallback]
        lib.SSL_CTX_set_verify.restype = None
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        _lib = lib
    return _lib


def _ctx_pointer(context: ssl.SSLContext) -> int:
    """The SSL_CTX* of ``context``: the first field after the object header (CPython's PySSLContext)."""
    lib = _library()
    pointer = ctypes.c_void_p.from_address(id(context) + sys.getsizeof(object())).value
    if not pointer:
        raise Unsupported("cannot reach OpenSSL's context from this Python")
    saved = context.verify_mode
    try:
        for mode, expected in ((ssl.CERT_OPTIONAL, _SSL_VERIFY_PEER),
                               (ssl.CERT_REQUIRED, _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT)):
            context.verify_mode = mode
            if lib.SSL_CTX_get_verify_mode(pointer) != expected:
                raise Unsupported("cannot reach OpenSSL's context from this Python")
    finally:
        context.verify_mode = saved
    return pointer


def require_any_client_certificate(context: ssl.SSLContext) -> None:
    """Make a server context require a client certificate and accept it whoever signed it."""
    pointer = _ctx_pointer(context)
    context.verify_mode = ssl.CERT_REQUIRED  # Python's own bookkeeping agrees: a certificate is required
    _library().SSL_CTX_set_verify(pointer, _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT, _ACCEPT_ANY)


def set_groups(context: ssl.SSLContext, groups: list[str]) -> None:
    """Key exchange groups in preference order, OpenSSL names (P-256, X25519, ...)."""
    pointer = _ctx_pointer(context)
    names = ctypes.create_string_buffer(":".join(groups).encode())
    if _library().SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.cast(names, ctypes.c_void_p)) != 1:
        raise ValueError(f"OpenSSL refused the groups {groups}")
