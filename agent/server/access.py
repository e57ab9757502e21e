"""Who may ask, and how often: basic auth against the web config's bcrypt hashes, and its rate limit. The
server checks both on every request, with the web config in force at that moment (``LiveWebConfig``)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from concurrent.futures import ThreadPoolExecutor

from agent.server.webconfig import RateLimit


class Authenticator:
    """Basic auth against bcrypt hashes without stalling the event loop.

    bcrypt (tens of milliseconds by design) runs in one worker thread, one check at a time as in
    exporter-toolkit, so it can never take more than one core from probes and scrapes. Verdicts are cached
    (bounded, keyed by a digest of user, hash and password), so an authorised scraper pays bcrypt once. A user
    that does not exist is checked against a decoy hash of a random string at the highest cost of the real
    users, so a wrong user name takes as long as a wrong password and timing does not reveal user names.
    """

    CACHE_SIZE = 1024

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        self._cache: dict[bytes, bool] = {}
        self._decoys: dict[int, bytes] = {}  # bcrypt cost -> decoy hash; touched by the worker thread only

    async def authorized(self, header: str, users: dict[str, bytes]) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        from hashlib import sha256  # here: an agent without basic auth never loads OpenSSL's digests

        known = users.get(user)
        cost = max((int(h[4:6]) for h in users.values()), default=10)
        hashed = known if known is not None else b"decoy-%d" % cost
        key = sha256(b"\0".join((user.encode(), hashed, password.encode("utf-8", "surrogatepass")))).digest()
        verdict = self._cache.get(key)
        if verdict is None:
            loop = asyncio.get_running_loop()
            if known is not None:
                verdict = await loop.run_in_executor(self._executor, self._check, password, known)
            else:
                verdict = await loop.run_in_executor(self._executor, self._check_decoy, password, cost)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))  # the oldest verdict
            self._cache[key] = verdict
        return verdict and known is not None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _check(password: str, hashed: bytes) -> bool:
        import bcrypt

        try:
            return bcrypt.checkpw(password.encode("utf-8", "surrogatepass"), hashed)
        except ValueError:  # a hash bcrypt cannot read (the file is validated, so only a bug gets here)
            return False

    def _check_decoy(self, password: str, cost: int) -> bool:
        import bcrypt

        decoy = self._decoys.get(cost)
        if decoy is None:
            decoy = self._decoys[cost] = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
        self._check(password, decoy)
        return False


class TokenBucket:
    """exporter-toolkit's rate_limit: a request per ``interval`` on average, ``burst`` at once."""

    def __init__(self) -> None:
        self._tokens = 0.0
        self._at = time.monotonic()
        self._limit: RateLimit | None = None

    def allow(self, limit: RateLimit | None) -> bool:
        if limit is None:
            return True
        now = time.monotonic()
        if limit != self._limit:
            self._limit, self._tokens, self._at = limit, float(limit.burst), now
        self._tokens = min(float(limit.burst), self._tokens + (now - self._at) / limit.interval)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
