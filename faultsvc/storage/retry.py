"""Which database failures are worth another attempt, and how long to wait before it."""

from __future__ import annotations

import enum
import random

from sqlalchemy import exc

# MySQL/MariaDB error numbers (server 1xxx, client 2xxx).
DEADLOCK = 1213  # also how Galera reports a certification conflict
LOCK_WAIT_TIMEOUT = 1205
DUPLICATE_KEY = 1062
TOO_MANY_CONNECTIONS = 1040
UNKNOWN_COMMAND = 1047  # Galera: "WSREP has not yet prepared node for application use"
SERVER_SHUTDOWN = 1053
CONNECTION_KILLED = 1927
CANNOT_CONNECT_SOCKET = 2002
CANNOT_CONNECT = 2003
SERVER_GONE = 2006
CONNECTION_LOST = 2013
COMMANDS_OUT_OF_SYNC = 2014
SERVER_LOST_EXTENDED = 2055
TIDB_WRITE_CONFLICT = 9007  # an optimistic transaction lost at commit

# Errors after which the transaction is certainly rolled back: running it again is safe.
CONFLICTS = frozenset({DEADLOCK, LOCK_WAIT_TIMEOUT, DUPLICATE_KEY, TIDB_WRITE_CONFLICT})
# Errors that say the endpoint does not answer, or is not fit to (a Galera node
# outside the primary component, or still joining): another endpoint may.
ENDPOINT_DOWN = frozenset(
    {
        TOO_MANY_CONNECTIONS,
        UNKNOWN_COMMAND,
        SERVER_SHUTDOWN,
        CONNECTION_KILLED,
        CANNOT_CONNECT_SOCKET,
        CANNOT_CONNECT,
        SERVER_GONE,
        CONNECTION_LOST,
        COMMANDS_OUT_OF_SYNC,
        SERVER_LOST_EXTENDED,
    }
)


class Failure(enum.Enum):
    """What a failed transaction says about the database."""

    CONFLICT = "conflict"  # rolled back by another transaction: run it again
    ENDPOINT_DOWN = "endpoint down"  # the connection failed: try the next endpoint
    # No answer within the timeout: the endpoint may be gone, or only busy (a
    # lock wait, a long statement); a ping on a new connection tells which.
    NO_ANSWER = "no answer"
    OTHER = "other"  # a bug or a bad request: retrying would fail the same way


def classify(error: BaseException) -> Failure:
    """The kind of `error`, raised while running a transaction."""
    if isinstance(error, TimeoutError):
        return Failure.NO_ANSWER
    if isinstance(error, ConnectionError):
        return Failure.ENDPOINT_DOWN
    if not isinstance(error, exc.DBAPIError):
        return Failure.OTHER
    number = error_number(error)
    if number in CONFLICTS or isinstance(error, exc.IntegrityError):
        return Failure.CONFLICT
    if (
        number in ENDPOINT_DOWN
        or error.connection_invalidated
        # aiomysql: "Not connected", "Cancelled during execution", a reset socket.
        or isinstance(error, exc.InterfaceError)
        or isinstance(error.orig, OSError)
    ):
        return Failure.ENDPOINT_DOWN
    if isinstance(error, exc.OperationalError) and number is None:
        return Failure.ENDPOINT_DOWN  # SQLite: unable to open the file, disk I/O error
    return Failure.OTHER


def error_number(error: exc.DBAPIError) -> int | None:
    """The MySQL error number of a driver error, or None (SQLite, or not from the server)."""
    args = getattr(error.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def backoff_seconds(attempt: int, base: float = 0.05, cap: float = 1.0) -> float:
    """How long to wait after failed attempt number `attempt` (1, 2, ...).

    Exponential with full jitter: servers that failed together do not retry
    together, so a conflict between two of them is not replayed in lockstep.
    """
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
