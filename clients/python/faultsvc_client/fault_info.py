"""Turning an exception into a fault's message and details, one small step each.

The server applies the contract's limits (255 characters of message, 65,535
bytes of details, with a visible truncation marker) and its own rule for
what is safe to show. The client only bounds what it sends, far above those
limits, so that a huge traceback cannot make the request itself too large to
be accepted: a fault must not be lost because it is long.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

# Above the server's limits, so the server still sees the text as too long
# and marks its truncation, and far below gRPC's 4 MiB message limit.
MESSAGE_CHARS_SENT = 1_024
DETAILS_BYTES_SENT = 128 * 1024


def exception_message(exc: BaseException) -> str:
    """The exception's own text, or its class name when it has none."""
    return str(exc).strip() or type(exc).__name__


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
