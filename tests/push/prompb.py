"""The reference definitions of Remote-Write 1.0 (prometheus/prompb: remote.proto and types.proto, the three
messages a sender fills), built with protobuf's own descriptors: the tests decode what the agent sends with
protobuf's parser, not with code of ours."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from agent.push import wire


def _messages():  # noqa: ANN202 - generated classes
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="prometheus/remote.proto", package="prometheus", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    repeated, optional = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("Label", ("name", 1, F.TYPE_STRING, optional, ""), ("value", 2, F.TYPE_STRING, optional, ""))
    message("Sample", ("value", 1, F.TYPE_DOUBLE, optional, ""), ("timestamp", 2, F.TYPE_INT64, optional, ""))
    message("TimeSeries", ("labels", 1, F.TYPE_MESSAGE, repeated, ".prometheus.Label"),
            ("samples", 2, F.TYPE_MESSAGE, repeated, ".prometheus.Sample"))
    message("WriteRequest", ("timeseries", 1, F.TYPE_MESSAGE, repeated, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _messages()


@dataclass(frozen=True)
class Pushed:
    labels: tuple[tuple[str, str], ...]  # as sent, in order
    value: float
    timestamp_ms: int

    @property
    def stale(self) -> bool:
        return struct.pack("<d", self.value) == struct.pack("<Q", wire.STALE_NAN_BITS)

    @property
    def name(self) -> str:
        return dict(self.labels)["__name__"]

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


def decode(body: bytes, compressed: bool = True) -> list[Pushed]:
    """Every sample of a request body (Snappy block format, then WriteRequest), parsed by protobuf."""
    request = WriteRequest()
    request.ParseFromString(wire.decompress(body) if compressed else body)
    return [Pushed(tuple((label.name, label.value) for label in series.labels), sample.value, sample.timestamp)
            for series in request.timeseries for sample in series.samples]
