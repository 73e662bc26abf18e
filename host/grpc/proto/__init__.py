"""Generated runtime-API modules; the `.proto` sources beside them are the truth (see host.grpc)."""
