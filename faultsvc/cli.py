"""The `faultsvc` command: the server (`serve`, `db`) and, for people, `show` and `faults`."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, cast

import sqlalchemy as sa

from faultsvc import serving
from faultsvc.config import ConfigError, Settings, load_settings
from faultsvc.errors import Unavailable
from faultsvc.faults import utc_now
from faultsvc.logs import configure_logging
from faultsvc.storage.failover import DatabaseEndpoints, describe, open_database
from faultsvc.storage.migrate import migrate, schema_problem
from faultsvc.storage.store import FaultStore
from faultsvc_client import cli as client_cli

log = logging.getLogger("faultsvc")
T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandFailed(Exception):
    """A command could not do its job; the message says why in one line."""


class CommandParser(argparse.ArgumentParser):
    """Reports an unknown argument with the usage of the (sub)command it was given to."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed, unknown


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        sys.exit(EXIT_USAGE)
    try:
        code = args.func(args)
    except ConfigError as error:
        print(f"faultsvc: {error}", file=sys.stderr)
        code = EXIT_USAGE
    except CommandFailed as error:
        print(f"faultsvc: {error}", file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code)


# The subcommands of a parser; they are CommandParsers too.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="faultsvc", description="Records the faults of database instances and shows them."
    )
    parser.add_argument("--version", action="version", version=f"faultsvc {version()}")
    # Subcommands are CommandParsers too; the client's commands accept any parser.
    commands = cast(Commands, parser.add_subparsers(metavar="COMMAND"))

    _add_serve_command(commands)
    _add_db_commands(commands)
    client_cli.register(commands)
    return parser


def _add_serve_command(commands: Commands) -> None:
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


def _add_db_commands(commands: Commands) -> None:
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


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", metavar="URL", help="SQLAlchemy async database URL")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO",
    )
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


def version() -> str:
    try:
        return importlib.metadata.version("faultsvc")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "unknown"


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        return serving.run(settings)
    except ValueError as error:  # settings that cannot work together: a usage error
        log.error("cannot start: %s", error)
        return EXIT_USAGE
    except (serving.StartError, Unavailable) as error:
        log.error("cannot start: %s", error)
    except sa.exc.SQLAlchemyError as error:
        log.error("cannot start: %s", database_problem(error))
    return EXIT_FAILED


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def upgrade(database: DatabaseEndpoints) -> str:
        return describe(await migrate(database))

    print(f"{_on_database(settings, 'upgrade the schema', upgrade)}: schema is current")
    return 0


def _db_purge(args: argparse.Namespace) -> int:
    if args.older_than < 0:
        print("faultsvc db purge: --older-than must not be negative", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args)
    keep = settings.max_faults_per_instance

    async def purge(database: DatabaseEndpoints) -> tuple[int, int]:
        problem = await schema_problem(await database.first_answering())
        if problem is not None:
            raise CommandFailed(f"cannot purge: {problem}; run `faultsvc db upgrade` first")
        store = FaultStore(database)
        capped = await store.cap_history(keep) if keep else 0
        cleared_before = utc_now() - timedelta(days=args.older_than)
        return capped, await store.purge(cleared_before)

    capped, purged = _on_database(settings, "purge", purge)
    if keep:
        print(f"capped {_count(capped, 'fault')} beyond the newest {keep} of their instance")
    days = _count(args.older_than, "day")
    print(f"purged {_count(purged, 'cleared fault')} older than {days}")
    return 0


def _on_database(
    settings: Settings,
    doing: str,
    work: Callable[[DatabaseEndpoints], Coroutine[Any, Any, T]],
) -> T:
    """Runs `work` on the settings' database; CommandFailed says in one line why it could not."""

    async def run() -> T:
        async with open_database(settings) as database:
            return await work(database)

    try:
        return asyncio.run(run())
    except Unavailable as error:
        raise CommandFailed(f"cannot {doing}: {error}") from None
    except sa.exc.SQLAlchemyError as error:
        raise CommandFailed(f"cannot {doing}: {database_problem(error)}") from None


def database_problem(error: sa.exc.SQLAlchemyError) -> str:
    """The database's own words, without SQLAlchemy's statement and link (nor parameters)."""
    original = getattr(error, "orig", None)
    return f"{type(original or error).__name__}: {original or error}"


def _count(number: float, noun: str) -> str:
    return f"{number:g} {noun}{'' if number == 1 else 's'}"
