"""The store on each backend, for the storage tests."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.storage.store import FaultStore


@pytest.fixture
def store(engine: AsyncEngine) -> FaultStore:
    return FaultStore(engine)
