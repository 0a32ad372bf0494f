"""The service's settings: one typed object, read from flags, environment and a config file."""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from faultsvc.policy.scrub import check_patterns

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///faultsvc.db"
NEXT_URL = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")
# The async driver faultsvc ships for each database it supports.
ASYNC_DRIVERS = {"sqlite": "aiosqlite", "mysql": "aiomysql", "mariadb": "aiomysql"}
URL_FORMS = "sqlite+aiosqlite:///PATH or mysql+aiomysql://USER:PASSWORD@HOST:PORT/DATABASE"
# The config file `load_settings` reads. pydantic-settings takes its sources
# from the class; the file reaches them this way, so that settings read with a
# file are still of the one Settings class (spawned workers unpickle them).
CONFIG_FILE: ContextVar[Path | None] = ContextVar("CONFIG_FILE", default=None)


class ConfigError(ValueError):
    """Settings that cannot be used; the message is one line that names the setting."""


class Settings(BaseSettings):
    """Everything the server can be told; flags win over FAULTSVC_* variables over the file."""

    # Settings hold secrets (tokens, database passwords): errors must not quote them.
    model_config = SettingsConfigDict(
        env_prefix="FAULTSVC_", extra="forbid", hide_input_in_errors=True
    )

    listen: str = Field("127.0.0.1:50051", description="HOST:PORT to serve gRPC on")
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL; several, comma-separated, for the endpoints of one "
        "database (the nodes of a cluster), used in that order of preference",
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="server processes sharing the port (SO_REUSEPORT); default: one per core",
    )
    metrics_listen: str | None = Field(
        None, description="HOST:PORT to serve Prometheus metrics on; off when unset"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    log_format: Literal["text", "json"] = Field("text", description="json: one object per line")

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_tracing_installed(cls, value: str | None) -> str | None:
        if value is not None and importlib.util.find_spec("opentelemetry.sdk") is None:
            raise ValueError("tracing needs the tracing extra: pip install 'faultsvc[tracing]'")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    admin_roles: Annotated[frozenset[str], NoDecode] = Field(
        frozenset({"admin"}), description="roles in x-roles metadata that make a caller admin"
    )
    allow_insecure_bind: bool = Field(
        False, description="listen beyond loopback without authentication"
    )
    tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="bearer tokens callers must present (comma-separated in FAULTSVC_TOKENS)"
    )
    tokens_file: Path | None = Field(
        None, description="file of bearer tokens, one a line, `TOKEN [roles=ROLE,...]`"
    )
    tls_cert: Path | None = Field(None, description="PEM certificate chain to serve TLS with")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA certificates: clients must present a certificate they signed"
    )
    scrub_patterns: list[str] = Field(
        [], description="regular expressions masked in faults, beside the built-in ones"
    )
    scrub_mask: str = Field("***", min_length=1, description="what a masked secret becomes")

    @field_validator("tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(token.strip() for token in value.split(",") if token.strip())
        return value

    @field_validator("scrub_patterns")
    @classmethod
    def _compile_patterns(cls, value: list[str]) -> list[str]:
        return check_patterns(value)

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError(
                "tls_client_ca needs tls_cert and tls_key: client certificates need TLS"
            )
        return self

    grace_seconds: float = Field(10.0, ge=0, description="how long in-flight calls may finish")
    database_pool_size: int = Field(10, ge=1)
    database_timeout_seconds: float = Field(
        5.0, gt=0, description="connect and statement timeout before a call is UNAVAILABLE"
    )
    max_receive_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_response_bytes: int = Field(
        2 * 1024 * 1024,
        ge=256 * 1024,
        le=4 * 1024 * 1024 - 64 * 1024,
        description="largest response; a list page ends early to fit (gRPC clients take 4 MiB)",
    )
    max_concurrent_rpcs: int = Field(
        2000, ge=1, description="calls handled at once; gRPC answers RESOURCE_EXHAUSTED beyond"
    )
    max_waiting_calls: int = Field(
        2000,
        ge=1,
        description="writes (and reads) waiting for the database; UNAVAILABLE at once beyond",
    )
    keepalive_seconds: float = Field(
        60.0, gt=0, description="ping a client whose connection is quiet this often"
    )
    keepalive_timeout_seconds: float = Field(
        20.0, gt=0, description="close a connection whose ping got no answer in this time"
    )
    max_connection_age_seconds: float = Field(
        300.0,
        gt=0,
        description="ask a client to reconnect (GOAWAY) after this long, so that clients "
        "spread again over hosts and workers that joined or came back",
    )
    max_connection_age_grace_seconds: float = Field(
        30.0, ge=0, description="how long calls in flight may then finish on the old connection"
    )
    otlp_endpoint: str | None = Field(
        None,
        description="send OpenTelemetry traces by OTLP/gRPC to this collector, e.g. "
        "http://127.0.0.1:4317 (needs the tracing extra); off when unset",
    )
    health_check_seconds: float = Field(2.0, gt=0, description="database probe interval")
    max_faults_per_instance: int | None = Field(
        None,
        ge=1,
        description="`db purge` clears each instance's faults beyond its newest N; off when unset",
    )
    watch_poll_seconds: float = Field(
        0.5, gt=0, le=60, description="how often the feed WatchFaults follows is read"
    )
    watch_overlap_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="how far behind the database's clock each read of the feed looks again, "
        "for occurrences that committed late (docs/fleet.md)",
    )
    watch_queue_size: int = Field(
        1000,
        ge=1,
        description="occurrences that may wait for a watcher; past it, the watcher is ended "
        "with WATCHER_TOO_SLOW and its resume token",
    )
    max_watchers: int = Field(
        1000, ge=1, description="WatchFaults streams each process follows at once"
    )
    watch_max_replay_seconds: float = Field(
        3600.0,
        gt=0,
        description="how old a resume token may be; older ones are OUT_OF_RANGE",
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _join_urls(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):  # a list in the config file
            return ",".join(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _check_urls(cls, value: str) -> str:
        urls = [with_async_driver(url) for url in split_database_urls(value)]
        if not urls:
            raise ValueError("no database URL given")
        if len(urls) > 1 and any(url.startswith("sqlite") for url in urls):
            raise ValueError("a SQLite database has one endpoint, its file")
        return ",".join(urls)

    @property
    def database_urls(self) -> list[str]:
        """The endpoints of the database, in order of preference."""
        return split_database_urls(self.database_url)

    @field_validator("admin_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(role.strip() for role in value.split(",") if role.strip())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = TomlConfigSettingsSource(settings_cls, toml_file=CONFIG_FILE.get())
        return init_settings, env_settings, config_file


class Address(NamedTuple):
    """A HOST:PORT to listen on; an IPv6 host is written in brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """`text` as HOST:PORT; a ValueError says what is wrong with it and what to write."""
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{text!r} is not HOST:PORT; write e.g. 127.0.0.1:50051")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:50051")
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    return Address(host, int(port))


def with_async_driver(text: str) -> str:
    """`text`, a database URL, on the async driver faultsvc ships for its database.

    `sqlite://` and `mysql://` name no driver (SQLAlchemy's default ones are
    not async) and get ours. Messages never quote the URL: it may hold a password.
    """
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ValueError(f"a URL is not a database URL; write {URL_FORMS}") from None
    if "@" in (url.host or ""):  # the host would quote what follows the password's '@'
        raise ValueError("a URL's password holds '@'; write it percent-encoded, as %40")
    backend = url.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"{backend} databases are not supported; write {URL_FORMS}")
    driver = ASYNC_DRIVERS[backend]
    if "+" in url.drivername and url.get_driver_name() != driver:
        raise ValueError(
            f"{url.drivername} is not the async driver faultsvc uses; write {backend}+{driver}://"
        )
    url = url.set(drivername=f"{backend}+{driver}")
    if backend == "sqlite" and url.database and "uri" not in url.query:
        directory = Path(url.database).parent
        if not directory.is_dir():
            raise ValueError(f"the SQLite file's directory {directory} is not a directory")
    try:  # the query arguments the dialect converts (?connect_timeout=10)
        url.get_dialect()().create_connect_args(url)
    except (TypeError, ValueError) as error:
        raise ValueError(f"a URL argument is wrong: {error}") from None
    _, separator, rest = text.strip().partition("://")
    return f"{url.drivername}{separator}{rest}"


def split_database_urls(value: str) -> list[str]:
    """`value` cut before each `scheme://` that follows a comma: one URL per endpoint.

    Only a comma followed by a new URL separates, so a comma elsewhere (in a
    password or a query string) stays part of its URL.
    """
    return [url.strip() for url in NEXT_URL.split(value) if url.strip()]


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings from flags (None means not given), FAULTSVC_* variables and a TOML file.

    Raises ConfigError, one line naming the flag, variable or file at fault.
    """
    given = {name: value for name, value in flags.items() if value is not None}
    if config_file is not None:
        _check_config_file(config_file)
    reading = CONFIG_FILE.set(config_file)
    try:
        return Settings(**given)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {config_file}: not valid TOML: {error}") from None
    except ValidationError as error:
        raise ConfigError(
            "; ".join(_explain(problem, given, config_file) for problem in error.errors())
        ) from None
    finally:
        CONFIG_FILE.reset(reading)


def _check_config_file(path: Path) -> None:
    """pydantic-settings skips a config file it cannot read: say why instead."""
    try:
        path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from None


def _explain(problem: ErrorDetails, flags: dict[str, Any], config_file: Path | None) -> str:
    """One validation problem, named as the operator wrote it: flag, variable or file key."""
    message = problem["msg"].removeprefix("Value error, ")
    if not problem["loc"]:
        return message
    name = str(problem["loc"][0])
    variable = f"{Settings.model_config.get('env_prefix', '')}{name}".upper()
    if problem["type"] == "extra_forbidden":
        return f"config file {config_file}: unknown setting {name!r}"
    if name in flags:
        where = "--" + name.replace("_", "-")
    elif variable in os.environ:
        where = variable
    elif config_file is not None:
        where = f"{name} in {config_file}"
    else:
        where = name
    return f"{where}: {message[:1].lower()}{message[1:]}"
