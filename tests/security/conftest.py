"""Servers that require credentials: bearer tokens from a file, or client certificates."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultsvc.app import FaultServer
from tests.support.servers import MakeServer

# A service that forwards its user's roles in x-roles.
FORWARDING_TOKEN = "forwarding-service-token-3b0c5e1f8a9d"
# The operators' CLI: admin whatever it sends.
ADMIN_TOKEN = "operators-admin-token-9e8d7c6b5a4f"
# A dashboard: a reader, even if it claims more.
READER_TOKEN = "dashboard-reader-token-1a2b3c4d5e6f"

TOKENS_FILE = f"""\
# tokens of the services that call faultsvc
{FORWARDING_TOKEN}

{ADMIN_TOKEN} roles=admin   # the operators' CLI
{READER_TOKEN} roles=reader
"""


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS_FILE)
    return path


@pytest.fixture
async def token_server(make_server: MakeServer, tokens_file: Path) -> FaultServer:
    """The real server, requiring a bearer token from `tokens_file` on every FaultService call."""
    return await make_server(tokens_file=tokens_file)
