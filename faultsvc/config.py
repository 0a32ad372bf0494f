"""The service's settings: one typed object, read from flags, environment and a config file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
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
    health_check_seconds: float = Field(2.0, gt=0, description="database probe interval")
    max_faults_per_instance: int | None = Field(
        None,
        ge=1,
        description="`db purge` clears each instance's faults beyond its newest N; off when unset",
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
        urls = split_database_urls(value)
        if not urls:
            raise ValueError("no database URL given")
        for url in urls:
            try:
                backend = make_url(url).get_backend_name()
            except ArgumentError:
                raise ValueError(f"not a database URL: {url!r}") from None
            if backend == "sqlite" and len(urls) > 1:
                raise ValueError("a SQLite database has one endpoint, its file")
        return value

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
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def split_database_urls(value: str) -> list[str]:
    """`value` cut before each `scheme://` that follows a comma: one URL per endpoint.

    Only a comma followed by a new URL separates, so a comma elsewhere (in a
    password or a query string) stays part of its URL.
    """
    return [url.strip() for url in NEXT_URL.split(value) if url.strip()]


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings from flags (None means not given), FAULTSVC_* variables and a TOML file."""
    given = {name: value for name, value in flags.items() if value is not None}
    if config_file is None:
        return Settings(**given)
    with_file = type(
        "Settings",
        (Settings,),
        {"model_config": {**Settings.model_config, "toml_file": config_file}},
    )
    settings: Settings = with_file(**given)
    return settings
