"""What SQLite's planner makes of the reads on a table without statistics (a new database).

SQLite plans from its indexes alone until ANALYZE has run: the latest-fault
read must start from each instance's entries, not from the index of the
fleet's newest faults, which would read every live fault of every instance.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from faultsvc.storage.engine import create_engine
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.storage.store import HISTORY_PAGES, LATEST_FAULTS


async def plans(path: Path, query: sa.Select[object], **parameters: object) -> list[str]:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    compiled = query.params(**parameters).compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
    )
    with sqlite3.connect(path) as connection:
        return [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {compiled}")]


async def test_the_latest_faults_are_read_from_each_instances_entries(tmp_path: Path) -> None:
    for with_details in (True, False):
        steps = await plans(
            tmp_path / "faults.db", LATEST_FAULTS[True][with_details], instance_ids=["i-1", "i-2"]
        )
        searches = [step for step in steps if step.startswith(("SEARCH", "SCAN"))]
        assert searches, steps
        assert all("ix_instance_faults_instance_last_occurred" in step for step in searches), steps


async def test_a_history_page_is_read_from_the_instances_entries(tmp_path: Path) -> None:
    first_page, _ = HISTORY_PAGES[True]
    steps = await plans(tmp_path / "faults.db", first_page, instance_id="i-1", limit=10)
    assert steps == [
        "SEARCH instance_faults USING INDEX ix_instance_faults_instance_last_occurred"
        " (instance_id=? AND deleted=?)"
    ]
