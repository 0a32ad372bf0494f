"""Servers that require credentials: bearer tokens from a file, or client certificates."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultsvc.app import FaultServer
from tests.support.servers import MakeServer
from tests.support.tokens import TOKENS_FILE


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS_FILE)
    return path


@pytest.fixture
async def token_server(make_server: MakeServer, tokens_file: Path) -> FaultServer:
    """The real server, requiring a bearer token from `tokens_file` on every FaultService call."""
    return await make_server(tokens_file=tokens_file)
