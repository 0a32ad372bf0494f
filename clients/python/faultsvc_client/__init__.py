"""Python clients of faultsvc: an async client, and the `faultsvc` commands for people."""

from faultsvc_client.client import FaultServiceClient, RetryPolicy, TlsConfig
from faultsvc_client.errors import FaultServiceError

__all__ = [
    "FaultServiceClient",
    "FaultServiceError",
    "RetryPolicy",
    "TlsConfig",
]
