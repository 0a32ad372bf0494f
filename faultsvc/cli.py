"""The `faultsvc` command: the server (`serve`, `db`) and, for people, `show` and `faults`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError

from faultsvc import serving
from faultsvc.app import InsecureBindError
from faultsvc.config import Settings, load_settings
from faultsvc.errors import Unavailable
from faultsvc.faults import utc_now
from faultsvc.logs import configure_logging
from faultsvc.storage.failover import DatabaseEndpoints, describe
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.storage.retention import cap_history
from faultsvc.storage.store import FaultStore
from faultsvc_client import cli as client_cli

log = logging.getLogger("faultsvc")


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        sys.exit(2)
    sys.exit(args.func(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faultsvc", description="Records the faults of database instances and shows them."
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server")
    _add_settings_flags(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="default 127.0.0.1:50051")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="server processes on one port; default: cores"
    )
    serve.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics over HTTP here"
    )
    serve.add_argument(
        "--allow-insecure-bind",
        action="store_true",
        default=None,
        help="listen beyond loopback without authentication",
    )
    auth = serve.add_argument_group(
        "authentication", "see docs/security.md; tokens may also come from FAULTSVC_TOKENS"
    )
    auth.add_argument(
        "--tokens-file",
        type=Path,
        metavar="PATH",
        help="bearer tokens callers must present, one a line: TOKEN [roles=ROLE,...]",
    )
    auth.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this chain")
    auth.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    auth.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="require client certificates signed by these CAs (mutual TLS)",
    )
    serve.set_defaults(func=_serve)

    database = commands.add_parser("db", help="manage the database").add_subparsers(
        metavar="COMMAND", required=True
    )
    upgrade = database.add_parser("upgrade", help="migrate the schema to the newest revision")
    _add_settings_flags(upgrade)
    upgrade.set_defaults(func=_db_upgrade)
    purge = database.add_parser("purge", help="delete faults cleared more than DAYS ago")
    _add_settings_flags(purge)
    purge.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    purge.add_argument(
        "--max-faults-per-instance",
        type=int,
        metavar="N",
        help="first clear each instance's faults beyond its newest N",
    )
    purge.set_defaults(func=_db_purge)

    client_cli.register(commands)
    return parser


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", metavar="URL", help="SQLAlchemy async database URL")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    parser.add_argument("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    parser.add_argument("--log-format", choices=["text", "json"], help="default text")


SETTINGS_FLAGS = (
    "listen",
    "database_url",
    "workers",
    "allow_insecure_bind",
    "metrics_listen",
    "log_level",
    "log_format",
    "max_faults_per_instance",
    "tokens_file",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
)


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in SETTINGS_FLAGS}
    settings = load_settings(args.config, **flags)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _serve(args: argparse.Namespace) -> int:
    try:
        return serving.run(_settings(args))
    except (InsecureBindError, ValidationError, ValueError) as error:
        log.error("%s", error)
        return 2
    except Unavailable as error:
        log.error("cannot start: %s", error)
        return 1


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def upgrade() -> str:
        database = DatabaseEndpoints.connect(settings.database_urls)
        try:
            engine = await database.first_answering()
            await upgrade_to_head(engine)
            return describe(engine)
        finally:
            await database.dispose()

    print(f"{asyncio.run(upgrade())}: schema is current")
    return 0


def _db_purge(args: argparse.Namespace) -> int:
    if args.older_than < 0:
        print("faultsvc db purge: --older-than must not be negative", file=sys.stderr)
        return 2
    settings = _settings(args)
    keep = settings.max_faults_per_instance

    async def purge() -> tuple[int, int]:
        database = DatabaseEndpoints.connect(settings.database_urls)
        try:
            await upgrade_to_head(await database.first_answering())
            capped = await cap_history(database.current, keep) if keep else 0
            cleared_before = utc_now() - timedelta(days=args.older_than)
            return capped, await FaultStore(database).purge(cleared_before)
        finally:
            await database.dispose()

    capped, purged = asyncio.run(purge())
    if keep:
        print(f"capped {capped} faults beyond the newest {keep} of their instance")
    print(f"purged {purged} cleared faults older than {args.older_than:g} days")
    return 0
