"""asyncio without OpenSSL until something uses TLS.

``import asyncio`` imports ``ssl``, which maps OpenSSL (libssl and libcrypto) and builds the ssl module's
tables: about 4 MiB of a log-only agent's 26 MiB, for TLS it never speaks. ``import_asyncio`` imports asyncio
as Python does on a system without ssl (each of its modules then holds ``ssl = None``), and gives them the
real module the moment anything imports ``ssl``: a prober, the web config, remote_write over https, a reload
that adds any of them. Nothing can speak TLS before then, since every TLS connection needs an
``ssl.SSLContext``; asyncio's modules then hold exactly what a plain ``import asyncio`` gives them
(tests/test_lazyssl.py compares every module of the two).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.abc imports importlib.resources, pathlib, tempfile...: 1 MiB, for two base classes
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec

# What asyncio's modules bind when their ``import ssl`` succeeds (CPython 3.11-3.13): the module, and in
# sslproto the errors that mean "try again once more data has come"
_HOLDERS = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")


def import_asyncio() -> None:
    """Import asyncio, leaving ssl out until it is first imported (unless either is loaded already)."""
    if "asyncio" not in sys.modules and "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError: no OpenSSL
        try:
            import asyncio  # noqa: F401
        finally:
            del sys.modules["ssl"]
        sys.meta_path.insert(0, _SslFinder())
    import asyncio  # noqa: F401, F811


def _give_asyncio(ssl: ModuleType) -> None:
    for name in _HOLDERS:
        vars(sys.modules[name])["ssl"] = ssl
    vars(sys.modules["asyncio.sslproto"])["SSLAgainErrors"] = (ssl.SSLWantReadError, ssl.SSLSyscallError)


class _SslFinder:
    """Finds nothing itself: for ``ssl`` it asks the finders after it and wraps the real loader, so that asyncio
    gets the module right after it is executed. The loader then takes the finder out of ``sys.meta_path``; a
    ``find_spec("ssl")`` that loads nothing (a library asking whether ssl exists) leaves it in place."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != "ssl":
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                spec.loader = _GivingLoader(spec.loader, self)  # type: ignore[assignment]  # a Loader by its methods
                return spec
        return None


class _GivingLoader:
    """The real loader's work, then asyncio gets the module; the module keeps the real loader as its own."""

    def __init__(self, loader: Loader, finder: _SslFinder):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _give_asyncio(module)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
