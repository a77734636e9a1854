"""The protocol's message classes, built from the compiled ``grpc_service.proto`` (grpc_service.binpb)
in a descriptor pool of their own: protobuf's global pool refuses a second definition of the same
names, which tritonclient.grpc's generated code also registers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]

SERVICE = "inference.GRPCInferenceService"
DESCRIPTOR_SET = Path(__file__).with_name("grpc_service.binpb")


def _message_classes() -> dict[str, Any]:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    return message_factory.GetMessageClassesForFiles([file.name for file in files], pool)


_classes = _message_classes()
ServerLiveRequest = _classes["inference.ServerLiveRequest"]
ServerLiveResponse = _classes["inference.ServerLiveResponse"]
ServerReadyRequest = _classes["inference.ServerReadyRequest"]
ServerReadyResponse = _classes["inference.ServerReadyResponse"]
ModelReadyRequest = _classes["inference.ModelReadyRequest"]
ModelReadyResponse = _classes["inference.ModelReadyResponse"]
ServerMetadataRequest = _classes["inference.ServerMetadataRequest"]
ServerMetadataResponse = _classes["inference.ServerMetadataResponse"]
ModelMetadataRequest = _classes["inference.ModelMetadataRequest"]
ModelMetadataResponse = _classes["inference.ModelMetadataResponse"]
ModelInferRequest = _classes["inference.ModelInferRequest"]
ModelInferResponse = _classes["inference.ModelInferResponse"]
ModelConfigRequest = _classes["inference.ModelConfigRequest"]
ModelConfigResponse = _classes["inference.ModelConfigResponse"]
ModelStatisticsRequest = _classes["inference.ModelStatisticsRequest"]
ModelStatisticsResponse = _classes["inference.ModelStatisticsResponse"]
RepositoryIndexRequest = _classes["inference.RepositoryIndexRequest"]
RepositoryIndexResponse = _classes["inference.RepositoryIndexResponse"]
RepositoryModelLoadRequest = _classes["inference.RepositoryModelLoadRequest"]
RepositoryModelLoadResponse = _classes["inference.RepositoryModelLoadResponse"]
RepositoryModelUnloadRequest = _classes["inference.RepositoryModelUnloadRequest"]
RepositoryModelUnloadResponse = _classes["inference.RepositoryModelUnloadResponse"]
