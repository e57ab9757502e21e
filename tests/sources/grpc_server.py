"""A real gRPC server for the tests: grpcio's server with the standard health service (grpcio-health-checking).

Run as ``python -m tests.sources.grpc_server ADDRESS [CERT KEY]`` (ADDRESS: ``127.0.0.1:PORT``, ``[::1]:PORT``);
it prints ``ready`` once serving (``GRPC_FAIL_FIRST=1``: its first call fails with UNAVAILABLE;
``GRPC_REQUIRE_METADATA=key=value``: calls without it fail with UNAUTHENTICATED), then reads
``<service> <SERVING|NOT_SERVING|SERVICE_UNKNOWN>`` lines on stdin to flip a service's status ("" is the whole
server: write ``- SERVING``), answering ``ok`` to each.
"""

import os
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class _RequireMetadata(grpc.ServerInterceptor):
    def __init__(self, key: str, value: str):
        self.pair = (key, value)

    def intercept_service(self, continuation, details):  # noqa: ANN001, ANN201 - grpcio's interface
        if self.pair in tuple(details.invocation_metadata or ()):
            return continuation(details)

        def refuse(request, context):  # noqa: ANN001, ANN202
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing metadata")

        return grpc.unary_unary_rpc_method_handler(refuse)


class _FailFirst(grpc.ServerInterceptor):
    """The first call fails with UNAVAILABLE (a server still starting), every other is served."""

    def __init__(self) -> None:
        self.calls = 0

    def intercept_service(self, continuation, details):  # noqa: ANN001, ANN201 - grpcio's interface
        self.calls += 1
        if self.calls > 1:
            return continuation(details)

        def refuse(request, context):  # noqa: ANN001, ANN202
            context.abort(grpc.StatusCode.UNAVAILABLE, "starting")

        return grpc.unary_unary_rpc_method_handler(refuse)


def _interceptors() -> list:
    interceptors: list = [_FailFirst()] if os.environ.get("GRPC_FAIL_FIRST") else []
    required = os.environ.get("GRPC_REQUIRE_METADATA")
    if required:
        key, _, value = required.partition("=")
        interceptors.append(_RequireMetadata(key, value))
    return interceptors


def main() -> None:
    address = sys.argv[1]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=_interceptors())
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("app", health_pb2.HealthCheckResponse.SERVING)
    if len(sys.argv) > 3:
        with open(sys.argv[2], "rb") as cert, open(sys.argv[3], "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    for line in sys.stdin:
        service, _, status = line.strip().rpartition(" ")
        servicer.set("" if service == "-" else service, health_pb2.HealthCheckResponse.ServingStatus.Value(status))
        print("ok", flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()
