"""A generic gRPC client that knows a server's API only through reflection.

    subscribe.py HOST:PORT SERVICE/METHOD [JSON_REQUEST]

Like grpcurl: it asks the server's reflection service (v1alpha) for the
method's descriptors, builds the request from JSON, calls the method over
plaintext HTTP/2 and prints every response as one line of proto3 JSON
(default values left out, 64-bit integers as strings, field names as in
the .proto). When the call fails it prints the status to stderr as
`Code: NAME` and `Message: ...` and exits with 64 + the status code.
It uses gRPC's Python implementation (grpcio) and nothing of the gateway's.
"""

import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(argv):
    if len(argv) not in (3, 4) or "/" not in argv[2]:
        print(__doc__, file=sys.stderr)
        return 2
    addr, full_method = argv[1], argv[2]
    body = argv[3] if len(argv) == 4 else "{}"
    service_name, method_name = full_method.rsplit("/", 1)
    with grpc.insecure_channel(addr) as channel:
        try:
            pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            method = pool.FindServiceByName(service_name).methods_by_name[method_name]
            request_type = message_factory.GetMessageClass(method.input_type)
            response_type = message_factory.GetMessageClass(method.output_type)
            request = json_format.Parse(body, request_type())
            if method.client_streaming:
                print(f"{full_method}: client streaming is not supported", file=sys.stderr)
                return 2
            kind = channel.unary_stream if method.server_streaming else channel.unary_unary
            call = kind(
                f"/{service_name}/{method_name}",
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            responses = call(request)
            if not method.server_streaming:
                responses = [responses]
            for response in responses:
                line = json_format.MessageToJson(
                    response, preserving_proto_field_name=True, indent=None
                )
                print(line, flush=True)
        except grpc.RpcError as e:
            code = e.code()
            print(f"ERROR:\n  Code: {code.name}\n  Message: {e.details()}", file=sys.stderr)
            return 64 + code.value[0]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
