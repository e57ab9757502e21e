"""The Remote-Write 1.0 wire format, written by hand for the three messages it needs.

::

    message WriteRequest { repeated TimeSeries timeseries = 1; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }  // milliseconds since the epoch

A request body is the Snappy *block* encoding (never the framed one) of the serialized ``WriteRequest``. Each
series' labels are encoded once per round from cached pieces (``label``): a protobuf library would build an
object per label and sample, and at 400,000 series per round that is most of the cost. ``tests/push`` decodes
what we send with the reference definitions (protobuf's own parser) and real receivers read it.
"""

from __future__ import annotations

import struct

from cramjam import snappy

CONTENT_TYPE = "application/x-protobuf"
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": CONTENT_TYPE,
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}

# The spec's stale marker: a NaN with this exact bit pattern tells the receiver the series ended here.
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
_STALE_BYTES = struct.pack("<Q", STALE_NAN_BITS)

double = struct.Struct("<d").pack  # a sample's value, as the 8 bytes of a protobuf double


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [varint(n) for n in range(16384)]  # lengths of labels and series: almost always two bytes or less


def _length(value: int) -> bytes:
    return _SMALL[value] if value < 16384 else varint(value)


_label_cache: dict[tuple[str, str], bytes] = {}
_LABEL_CACHE_MAX = 200_000


def label(name: str, value: str) -> bytes:
    """One ``Label`` as a field of ``TimeSeries`` (tag, length, name, value); cached, since the same pairs
    (``phase="connect"``, ``le="0.5"``) come back in every round."""
    key = (name, value)
    encoded = _label_cache.get(key)
    if encoded is None:
        name_bytes = name.encode()
        value_bytes = value.encode()
        body = b"\x0a" + _length(len(name_bytes)) + name_bytes + b"\x12" + _length(len(value_bytes)) + value_bytes
        encoded = b"\x0a" + _length(len(body)) + body
        if len(_label_cache) >= _LABEL_CACHE_MAX:
            _label_cache.clear()  # label values that churn (log paths): start over rather than grow
        _label_cache[key] = encoded
    return encoded


def labels(pairs: dict[str, str]) -> bytes:
    """Every label of a series, sorted by name as the spec requires; empty values mean no label."""
    return b"".join(label(name, pairs[name]) for name in sorted(pairs) if pairs[name])


class Samples:
    """Encodes the one sample a series has in a round: every series of a round shares its timestamp, so only
    the value changes between them."""

    __slots__ = ("timestamp_ms", "_head", "tail", "size")

    def __init__(self, timestamp_ms: int):
        self.timestamp_ms = timestamp_ms
        self.tail = b"\x10" + varint(timestamp_ms)  # what follows the value: the timestamp
        self._head = b"\x12" + _length(9 + len(self.tail)) + b"\x09"
        self.size = len(self._head) + 8 + len(self.tail)

    def prefix(self, label_bytes: bytes) -> bytes:
        """What precedes the value in one ``TimeSeries`` field of ``WriteRequest``: a series is
        ``prefix(labels) + double(value) + tail``."""
        return b"\x0a" + _length(len(label_bytes) + self.size) + label_bytes + self._head

    def series(self, label_bytes: bytes, value: float) -> bytes:
        """One ``TimeSeries`` field of ``WriteRequest``: the labels and this round's sample."""
        return self.prefix(label_bytes) + double(value) + self.tail

    def stale(self, label_bytes: bytes) -> bytes:
        """The same, with the stale marker as the value."""
        return self.prefix(label_bytes) + _STALE_BYTES + self.tail


def compress(body: bytes) -> bytes:
    """A request body: the Snappy block format of a serialized WriteRequest."""
    return bytes(snappy.compress_raw(body))


def decompress(body: bytes) -> bytes:
    return bytes(snappy.decompress_raw(body))
