"""The faultsvc benchmark: the real server beside a bare gRPC echo server, driven by h2load."""
