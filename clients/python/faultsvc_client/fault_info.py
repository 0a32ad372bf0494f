"""Turning an exception into a fault's message and details, one small step each.

What a tenant may read is decided here, in one place, for the reporters and
the notification callback alike. Nova's lesson (CVE-2019-14433, OSSA-2019-003):
the text of an arbitrary exception can hold internal addresses, paths, host
names or SQL, and the fault's message is shown to everyone. So the message
holds an exception's text only when its type is declared safe to show (the
service's own user-facing errors); any other exception is shown by its class
name, and its text goes to the admin-only details with the traceback.

The server applies the contract's limits (255 characters of message, 65,535
bytes of details, with a visible truncation marker) and masks credentials.
The client only bounds what it sends, far above those limits, so that a huge
traceback cannot make the request itself too large to be accepted: a fault
must not be lost because it is long.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Above the server's limits, so the server still sees the text as too long
# and marks its truncation, and far below gRPC's 4 MiB message limit.
MESSAGE_CHARS_SENT = 1_024
DETAILS_BYTES_SENT = 128 * 1024


@dataclass(frozen=True)
class DescribedException:
    """An exception as a fault needs it, whether at hand or told by a notification.

    `type_names` are qualified as a traceback prints them
    ("nova.exception.NoValidHost", "ValueError"): the exception's own class
    first, then, when known, the classes it derives from. Empty when the
    type is unknown.
    """

    type_names: tuple[str, ...]
    text: str
    traceback: str = ""

    @property
    def class_name(self) -> str:
        """The exception's class, without its module ("NoValidHost"); "" when unknown."""
        return self.type_names[0].rpartition(".")[2] if self.type_names else ""


class SafeExceptionTypes:
    """The exception types whose text a tenant may read in a fault's message.

    Each is declared by the class itself, by its qualified name as a
    traceback prints it ("nova.exception.NoValidHost", "ValueError"), or by
    a module, which declares every class in it ("nova.exception"). Declaring
    a class declares its subclasses wherever the derivation is known (an
    exception at hand, a notification naming the base class).
    """

    def __init__(self, declared: Iterable[str | type[BaseException]] = ()) -> None:
        names = (qualified_name(d) if isinstance(d, type) else d.strip() for d in declared)
        self.names = frozenset(name for name in names if name)

    def __repr__(self) -> str:
        return f"SafeExceptionTypes({sorted(self.names)!r})"

    def allow(self, exception: DescribedException) -> bool:
        """Whether the exception's text may be shown to a tenant."""
        return any(self.declares(type_name) for type_name in exception.type_names)

    def declares(self, type_name: str) -> bool:
        # A declared module covers its classes: the name or a dotted prefix.
        return any(type_name == name or type_name.startswith(name + ".") for name in self.names)


NOTHING_SAFE = SafeExceptionTypes()


def message_and_details(
    exception: DescribedException, safe_types: SafeExceptionTypes
) -> tuple[str, str]:
    """The fault's message and details: the rule for what a tenant sees.

    The message is the exception's text if its type is declared safe, else
    its class name ("" when neither is known: the caller names the fault).
    The details hold the traceback or, without one, the exception line as
    Python prints it, so the full text is there for admins either way.
    """
    text = exception.text.strip()
    message = text if text and safe_types.allow(exception) else exception.class_name
    details = exception.traceback or exception_line(exception)
    return message, details


def exception_line(exception: DescribedException) -> str:
    """ "nova.exception.NoValidHost: No valid host was found.", as a traceback ends."""
    type_name = exception.type_names[0] if exception.type_names else ""
    return ": ".join(part for part in (type_name, exception.text.strip()) if part)


def describe_exception(exc: BaseException) -> DescribedException:
    """An exception at hand: its classes, its text and its formatted traceback."""
    return DescribedException(
        type_names=tuple(qualified_name(cls) for cls in type(exc).__mro__),
        text=str(exc),
        traceback=exception_details(exc),
    )


def qualified_name(cls: type) -> str:
    """The class's name as a traceback prints it: module-qualified but for builtins."""
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_details(exc: BaseException) -> str:
    """The formatted traceback, chained causes included, as Python prints it."""
    return "".join(traceback.format_exception(exc))


def truncate_message_for_transport(message: str) -> str:
    return truncate_utf8(message[:MESSAGE_CHARS_SENT], 4 * MESSAGE_CHARS_SENT)


def truncate_details_for_transport(details: str) -> str:
    return truncate_utf8(details, DETAILS_BYTES_SENT)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, on a character boundary.

    What UTF-8 cannot carry (lone surrogates, as undecodable file names give)
    becomes "?": protobuf would refuse to send the string at all.
    """
    encoded = text.encode("utf-8", errors="replace")
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def process_name() -> str:
    """The running program's name, the default `source` of its faults."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is None or argv0.name in ("-c", "-m"):
        return Path(sys.executable).name or "python"
    if argv0.name == "__main__.py":  # python -m package
        return argv0.parent.name
    return argv0.name.removesuffix(".py")
