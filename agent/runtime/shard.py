"""Sharding HTTP targets across replicas: ``--shard.index I --shard.count N``.

Every replica reads the same config and discovers the same targets; each probes the targets whose key hashes
to its index. The hash is Lamping and Veach's jump consistent hash ("A Fast, Minimal Memory, Consistent Hash
Algorithm", 2014) over a 64-bit BLAKE2b of the key: the same key lands on the same index in every process
and every Python version, the shares are even, and growing from N to N+1 replicas moves only the 1/(N+1) of
the targets that the new replica takes (the ordinals of a StatefulSet grow and shrink at the end, which is
exactly what jump hash supports).
"""

from __future__ import annotations

from dataclasses import dataclass

_MASK = (1 << 64) - 1


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in [0, buckets) of a 64-bit key."""
    bucket, candidate = -1, 0
    while candidate < buckets:
        bucket = candidate
        key = (key * 2862933555777941757 + 1) & _MASK
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def shard_of(key: str, count: int) -> int:
    from hashlib import blake2b  # here: an agent that is not sharded never loads hashlib (and OpenSSL's digests)

    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return jump_hash(int.from_bytes(digest, "big"), count)


@dataclass(frozen=True)
class Shard:
    """Which share of the targets this replica probes; the default probes them all."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in 0..{self.count - 1}")

    def owns(self, key: str) -> bool:
        return self.count == 1 or shard_of(key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


UNSHARDED = Shard()  # one replica probes every target
