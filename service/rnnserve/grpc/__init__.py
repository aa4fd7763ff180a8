"""gRPC protocol adapter: KServe v2 `inference.GRPCInferenceService` over the engine."""
