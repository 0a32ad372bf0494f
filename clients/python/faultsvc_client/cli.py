"""`faultsvc show` and `faultsvc faults list`: an instance's faults, for people.

`show` prints the Property/Value table of `trove show` (fault_date, the
latest occurrence; fault_message, and fault_details for admins), with how
many times the fault occurred and when first; `faults list` prints the
instance's fault history, the one that occurred last first. `--json` prints the same data for
scripts, with the proto field names: a fault (`null` when there is none), or
a list of faults (`[]`).

Stored text is printed inertly: a character a terminal could act on (an
escape sequence's ESC, a carriage return, a bidirectional override) is
shown escaped, as `\\x1b`, `\\r`, `\\u202e`, in tables and in JSON alike.

Exit codes:
  0  the answer was printed, including "Instance X has no fault." (having no
     fault is a normal answer, not a failure; with --json it prints `null`,
     or `[]` for `faults list`)
  1  faultsvc answered with an unexpected error
  2  the command line is wrong
  3  faultsvc cannot be reached, or is unavailable (e.g. its database is down)
  4  faultsvc refused the request: an invalid argument, a missing or wrong
     token, or a permission denied
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from prettytable import PrettyTable

from faultsvc.v1 import fault_pb2
from faultsvc_client.client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    FaultServiceClient,
    TlsConfig,
    request_id_filter,
)
from faultsvc_client.errors import FaultServiceError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REFUSED = 4

ADMIN_ROLE = "admin"

# The server's largest page; a larger --page-size is a mistake, not a wish.
MAX_PAGE_SIZE = 1_000
# A day: far past any answer worth waiting for; far larger deadlines overflow gRPC's clock.
MAX_TIMEOUT = 86_400.0

_REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid argument",
    grpc.StatusCode.OUT_OF_RANGE: "invalid argument",
    grpc.StatusCode.UNAUTHENTICATED: "not authenticated (give --token or set FAULTSVC_TOKEN)",
    grpc.StatusCode.PERMISSION_DENIED: "permission denied",
}

Command = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `show`, `faults list`, `find`, `tail` and `top` to a `faultsvc` command line.

    Each sets `func`, which takes the parsed arguments and returns the exit code.
    """
    command = functools.partial(_add_command, parents=[connection_options()])

    show = command(
        subparsers,
        "show",
        "show an instance's latest fault",
        "Show the latest fault of an instance as a Property/Value table.",
    )
    show.add_argument("instance_id", metavar="INSTANCE_ID")
    show.set_defaults(func=show_command)

    faults = subparsers.add_parser("faults", help="an instance's faults, or the fleet's")
    _add_faults_commands(
        faults.add_subparsers(dest="faults_command", metavar="COMMAND", required=True), command
    )


def _add_faults_commands(
    faults_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    listing = command(
        faults_commands,
        "list",
        "list an instance's faults, newest first",
        "List the faults of an instance, newest first.",
    )
    listing.add_argument("instance_id", metavar="INSTANCE_ID")
    listing.add_argument(
        "--page-size",
        type=page_size,
        default=0,
        metavar="N",
        help=f"faults per page, 1 to {MAX_PAGE_SIZE:,} (default: the server's, 50)",
    )
    listing.add_argument("--all", action="store_true", help="follow every page, not just the first")
    listing.set_defaults(func=list_command)

    finding = command(
        faults_commands,
        "find",
        "find the faults of any instance by request id (admins)",
        "Find the faults of any instance that carry a request id, newest first. "
        "Asks as an admin: faultsvc answers admins only.",
    )
    finding.add_argument("--request-id", metavar="ID", help="the service's own request id")
    finding.add_argument("--global-request-id", metavar="ID", help="the global request id")
    # Not set_defaults(admin=True): the commands share the --admin action, and its default.
    finding.set_defaults(func=find_command)

    # Imported here: the fleet's commands are built on this module's.
    from faultsvc_client.fleet_cli import add_fleet_commands

    add_fleet_commands(faults_commands, command)


def _add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_: str,
    description: str,
    *,
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """A command that talks to faultsvc: the connection options, and the exit codes in its help."""
    return subparsers.add_parser(
        name,
        parents=parents,
        help=help_,
        description=description,
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_tls_options(tls: argparse._ArgumentGroup) -> None:
    tls.add_argument(
        "--ca-file",
        default=os.environ.get("FAULTSVC_CA_FILE"),
        help="CA certificates to verify faultsvc with; turns TLS on ($FAULTSVC_CA_FILE)",
    )
    tls.add_argument(
        "--cert-file",
        default=os.environ.get("FAULTSVC_CERT_FILE"),
        help="client certificate, for mutual TLS ($FAULTSVC_CERT_FILE)",
    )
    tls.add_argument(
        "--key-file",
        default=os.environ.get("FAULTSVC_KEY_FILE"),
        help="client private key, for mutual TLS ($FAULTSVC_KEY_FILE)",
    )


def connection_options() -> argparse.ArgumentParser:
    """The options every command shares: where faultsvc is and who is asking."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--target",
        default=os.environ.get("FAULTSVC_TARGET", DEFAULT_TARGET),
        metavar="HOST:PORT",
        help=f"faultsvc's address (default: $FAULTSVC_TARGET or {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--admin",
        action="store_true",
        help=f"ask with the {ADMIN_ROLE} role, which sees fault details (stack traces)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.add_argument(
        "--token",
        default=os.environ.get("FAULTSVC_TOKEN"),
        metavar="T",
        help="bearer token, when faultsvc requires one (default: $FAULTSVC_TOKEN)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for an answer (default: {DEFAULT_TIMEOUT:g})",
    )
    _add_tls_options(parser.add_argument_group("TLS"))
    return parser


def exit_codes_epilog() -> str:
    return "exit codes:" + (__doc__ or "").split("Exit codes:", 1)[1].rstrip()


def page_size(text: str) -> int:
    """--page-size: a whole number of faults the server pages by."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_PAGE_SIZE:,}, not {size}")
    return size


def seconds(text: str) -> float:
    """--timeout: a number of seconds gRPC can make a deadline of."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT:  # NaN too
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_TIMEOUT:g} seconds, not {text}"
        )
    return value


def show_command(args: argparse.Namespace) -> int:
    return run(args, show)


def list_command(args: argparse.Namespace) -> int:
    return run(args, list_faults)


async def show(client: FaultServiceClient, args: argparse.Namespace) -> int:
    fault = await client.get_latest_fault(args.instance_id)
    if args.json:
        print(inert_json(None if fault is None else fault_dict(fault)))
    elif fault is None:
        print(f"Instance {inert_line(args.instance_id)} has no fault.")
    else:
        print(fault_table(fault))
    return EXIT_OK


def find_command(args: argparse.Namespace) -> int:
    if not (args.request_id or args.global_request_id):
        print(
            "faultsvc faults find: give --request-id, --global-request-id, or both",
            file=sys.stderr,
        )
        return EXIT_USAGE
    args.admin = True  # faultsvc answers admins only
    return run(args, find_faults)


async def find_faults(client: FaultServiceClient, args: argparse.Namespace) -> int:
    filter_ = request_id_filter(args.request_id, args.global_request_id)
    page = await client.search_faults(filter_)
    if args.json:
        print(inert_json([fault_dict(fault) for fault in page.faults]))
    elif not page.faults:
        print("No fault carries that request id.")
    else:
        print(fault_history_table(page.faults, with_details=True, with_instance=True))
    if page.next_page_token:
        print("There are older faults with that request id.", file=sys.stderr)
    return EXIT_OK


async def list_faults(client: FaultServiceClient, args: argparse.Namespace) -> int:
    if args.all:
        faults = [f async for f in client.iter_faults(args.instance_id, page_size=args.page_size)]
        next_page_token = ""
    else:
        page = await client.list_faults(args.instance_id, page_size=args.page_size)
        faults, next_page_token = list(page.faults), page.next_page_token
    if args.json:
        print(inert_json([fault_dict(fault) for fault in faults]))
    elif not faults:
        print(f"Instance {inert_line(args.instance_id)} has no faults.")
    else:
        print(fault_history_table(faults, with_details=args.admin))
    if next_page_token:
        print("There are older faults: add --all to list every one.", file=sys.stderr)
    return EXIT_OK


def run(
    args: argparse.Namespace,
    command: Callable[[FaultServiceClient, argparse.Namespace], Coroutine[Any, Any, int]],
) -> int:
    """Runs one command against faultsvc and turns its failures into exit codes."""
    try:
        tls = tls_config(args)
    except OSError as error:
        print(f"error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE

    async def call() -> int:
        roles = [ADMIN_ROLE] if args.admin else []
        async with FaultServiceClient.connect(
            args.target, token=args.token, roles=roles, tls=tls, timeout=args.timeout
        ) as client:
            return await command(client, args)

    try:
        return asyncio.run(call())
    except FaultServiceError as error:
        print(f"error: {inert_line(failure_message(error, args.target, tls))}", file=sys.stderr)
        return failure_exit_code(error)


def tls_config(args: argparse.Namespace) -> TlsConfig | None:
    if not (args.ca_file or args.cert_file or args.key_file):
        return None
    return TlsConfig.from_files(args.ca_file, args.cert_file, args.key_file)


def failure_message(error: FaultServiceError, target: str, tls: TlsConfig | None) -> str:
    """One line that says what went wrong, naming the field when one was wrong."""
    if error.code is grpc.StatusCode.UNAVAILABLE:
        if is_connection_failure(error):
            return f"cannot reach faultsvc at {target}{connection_hint(error, tls)}"
        return f"faultsvc at {target} is unavailable: {error.details}"
    if error.code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"faultsvc at {target} did not answer in time"
    problem = _REFUSED.get(error.code, error.code.name)
    if error.field_violations:
        fields = "; ".join(f"{v.field}: {v.description}" for v in error.field_violations)
        return f"{problem}: {fields}"
    return f"{problem}: {error.details}" if error.details else problem


def failure_exit_code(error: FaultServiceError) -> int:
    if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return EXIT_UNAVAILABLE
    if error.code in _REFUSED:
        return EXIT_REFUSED
    return EXIT_ERROR


def is_connection_failure(error: FaultServiceError) -> bool:
    # gRPC's own wording when no connection could be made, as opposed to a
    # server that answered UNAVAILABLE (e.g. because its database is down).
    details = error.details.lower()
    return "failed to connect" in details or "dns resolution failed" in details


def connection_hint(error: FaultServiceError, tls: TlsConfig | None) -> str:
    """Why a connection may have failed, when gRPC's words suggest TLS."""
    details = error.details.lower()
    if "handshake failed" in details:
        if "certificate_verify_failed" in details:
            return ": its certificate is not signed by the CA of --ca-file"
        if "wrong_version_number" in details:
            return ": the TLS handshake failed; it may not serve TLS (drop --ca-file)"
        return ": the TLS handshake failed"
    if "socket closed" not in details:
        return ""
    # A server that wants TLS, or a client certificate, hangs up without a word.
    if tls is None:
        return ": it closed the connection; if it serves TLS, give --ca-file"
    if tls.certificate_chain is None:
        return (
            ": it closed the connection; if it requires client certificates,"
            " give --cert-file and --key-file"
        )
    return ": it closed the connection"


def fault_properties(fault: fault_pb2.Fault) -> dict[str, str]:
    """The rows `show` prints, inert; the admin-only ones only when the server sent them."""
    properties = {
        "fault_date": fault_date(fault),
        "first_fault_date": first_fault_date(fault),
        "occurrence_count": str(fault.occurrence_count or 1),
        "fault_message": inert_line(fault.message),
        "fault_id": inert_line(fault.id),
        "instance_id": inert_line(fault.instance_id),
        "source": inert_line(fault.source),
        "request_id": inert_line(fault.request_id),
        "global_request_id": inert_line(fault.global_request_id),
    }
    if fault.host:
        properties["host"] = inert_line(fault.host)
    if fault.trace_id:
        properties["trace_id"] = inert_line(fault.trace_id)
    if fault.details:
        properties["fault_details"] = readable_details(fault.details)
    return properties


def fault_table(fault: fault_pb2.Fault) -> str:
    # Sorted by property and left-aligned, as python-troveclient prints `show`.
    table = PrettyTable(["Property", "Value"])
    table.align = "l"
    for name, value in sorted(fault_properties(fault).items()):
        table.add_row([name, value])
    return table.get_string()


def fault_history_table(
    faults: Sequence[fault_pb2.Fault], *, with_details: bool, with_instance: bool = False
) -> str:
    columns = ["Date", "Count", "Fault ID", "Source", "Message"]
    if with_instance:
        columns.insert(2, "Instance")
    if with_details:
        columns.append("Details")
    table = PrettyTable(columns)
    table.align = "l"
    for fault in faults:
        row = [
            fault_date(fault),
            str(fault.occurrence_count or 1),
            *map(inert_line, (fault.id, fault.source, fault.message)),
        ]
        if with_instance:
            row.insert(2, inert_line(fault.instance_id))
        if with_details:
            row.append(readable_details(fault.details))
        table.add_row(row)
    return table.get_string()


def fault_date(fault: fault_pb2.Fault) -> str:
    """The fault's date: its latest occurrence (a server that does not count sends only one)."""
    if fault.HasField("last_occur_time"):
        return iso_seconds(fault.last_occur_time)
    return first_fault_date(fault)


def first_fault_date(fault: fault_pb2.Fault) -> str:
    return iso_seconds(fault.create_time) if fault.HasField("create_time") else ""


def iso_seconds(stamp: Timestamp) -> str:
    """ISO 8601 UTC to the second, as `trove show` prints dates."""
    return stamp.ToDatetime().isoformat(timespec="seconds")


def readable_details(details: str) -> str:
    """Details as lines of a table cell, inert."""
    # The table prints one line per line of the value; tabs and carriage
    # returns would break its columns.
    lines = details.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4).rstrip("\n")
    return "\n".join(map(inert_line, lines.split("\n")))


def inert_line(text: str) -> str:
    """`text` with every character that is not printable escaped as Python writes it (`\\x1b`).

    What a terminal acts on (ESC, BEL, CR, C1 controls, bidirectional
    overrides, line breaks) is all unprintable, so none of it reaches the
    terminal as such.
    """
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def fault_dict(fault: fault_pb2.Fault) -> dict[str, Any]:
    """The fault as JSON data, with the proto field names."""
    return json_format.MessageToDict(fault, preserving_proto_field_name=True)


def inert_json(data: Any) -> str:
    # ensure_ascii escapes every character outside printable ASCII (\u001b).
    return json.dumps(data, indent=2, ensure_ascii=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faultsvc", description=(__doc__ or "").splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
