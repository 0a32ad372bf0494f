"""Log setup: one line per event, as text for people or JSON for log pipelines.

Nothing the service logs carries admin-only fields: faults are logged by id,
instance and source, never by details.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    level_number = logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    # DEBUG is for faultsvc's own loggers: database drivers log statement
    # parameters at DEBUG, and those hold admin-only fields.
    logging.basicConfig(level=max(logging.INFO, level_number), handlers=[handler], force=True)
    logging.getLogger("faultsvc").setLevel(level_number)
    # Alembic tells every process "Context impl SQLiteImpl"; faultsvc logs the
    # migrations it runs itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
