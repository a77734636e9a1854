"""The Open Inference Protocol's gRPC face (KServe v2 / Triton's ``inference.GRPCInferenceService``),
served by grpcio on its own port from the same process, models and limits as HTTP."""

from service.api.grpc.server import SHUTDOWN_GRACE_S, build_grpc_server, start_grpc_server

__all__ = ["SHUTDOWN_GRACE_S", "build_grpc_server", "start_grpc_server"]
