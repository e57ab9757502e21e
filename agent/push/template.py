"""The labels of a family's samples in a remote-write round, pre-encoded (``Template``): the constant pieces once,
the places of the series' own label values."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from agent.push import wire
from agent.series.exposition import go_float
from agent.series.family import LabelValues

Encode = Callable[["Template", LabelValues], "bytes | None"]


@functools.lru_cache(maxsize=256)
def le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return tuple(go_float(bound) for bound in (*bounds, math.inf))


class Template:
    """The labels of one sample name of one family in one group, sorted: constant pieces pre-encoded, and the
    places where the series' own label values go (index into its label values; ``le`` last for buckets).

    Kept small (there is one per sample name per family, 170,000 for 10,000 targets): the constant labels are
    a dict shared by every template of the group, a template without varying labels holds only its bytes, and
    a template's cache of encoded label sets exists once it is used."""

    __slots__ = ("pieces", "constant", "const_labels", "sample_name", "names", "one")

    def __init__(self, names: tuple[str, ...], const_labels: dict[str, str], sample_name: str):
        self.names = names
        self.const_labels = const_labels  # shared: without __name__
        self.sample_name = sample_name
        entries: list[tuple[str, str | int]] = [*const_labels.items(), ("__name__", sample_name),
                                                *((n, i) for i, n in enumerate(names))]
        entries.sort(key=lambda entry: entry[0])
        pieces: list[bytes | tuple[int, str]] = []
        for name, source in entries:
            if isinstance(source, int):
                pieces.append((source, name))
            elif source:
                encoded = wire.label(name, source)
                if pieces and isinstance(pieces[-1], bytes):
                    pieces[-1] += encoded
                else:
                    pieces.append(encoded)
        # the whole label set when no label value varies (most families of a probe have no labels of their own)
        self.constant: bytes | None = None
        self.pieces: tuple[bytes | tuple[int, str], ...] = ()
        # one varying label (a bucket's le, a probe's phase): the bytes before it, where it is, the bytes after
        self.one: tuple[bytes, int, str, bytes] | None = None
        slots = [piece for piece in pieces if isinstance(piece, tuple)]
        if not slots:
            self.constant = b"".join(piece for piece in pieces if isinstance(piece, bytes))
        elif len(slots) == 1:
            at = pieces.index(slots[0])
            # pieces alternate: constant runs were merged, so at most one bytes piece on each side
            before = b"".join(piece for piece in pieces[:at] if isinstance(piece, bytes))
            after = b"".join(piece for piece in pieces[at + 1:] if isinstance(piece, bytes))
            self.one = (before, slots[0][0], slots[0][1], after)
        else:
            self.pieces = tuple(pieces)

    def encode(self, values: LabelValues) -> bytes:
        """The label set of the series with these label values. Label sets are not kept between rounds (one
        per series would cost as much memory as the store); each label pair is (``wire.label``)."""
        if self.constant is not None:
            return self.constant
        if self.one is not None:
            before, index, name, after = self.one
            value = values[index]
            return before + wire.label(name, value) + after if value else before + after
        label = wire.label
        return b"".join([piece if isinstance(piece, bytes) else (label(piece[1], values[piece[0]])
                                                                   if values[piece[0]] else b"")
                         for piece in self.pieces])

    def as_dict(self, values: LabelValues) -> dict[str, str]:
        labels = dict(self.const_labels)
        labels["__name__"] = self.sample_name
        labels.update(zip(self.names, values, strict=True))
        return labels
