"""`faultsvc faults tail` and `faultsvc faults top`: what is failing across the fleet, now.

`tail` prints the latest faults of every instance, then follows new
occurrences as they are recorded, one line each (like `tail -f`): time,
instance, source, count, message. It resumes by itself when the server
restarts or it fell behind, and says so on stderr; nothing is skipped
without a word. `top` prints the faults that occurred most in a window,
each with a small histogram of its occurrences per interval: whether an
error is growing or fading. Both ask as admins, and print stored text
inertly; `--json` prints JSON (one object per line for `tail`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from prettytable import PrettyTable

from faultsvc.v1 import fault_pb2
from faultsvc_client.cli import inert_json, inert_line, run
from faultsvc_client.client import FaultServiceClient, fleet_filter
from faultsvc_client.errors import FaultServiceError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C

MAX_LINES = 1_000
MAX_RANKED = 100
MAX_INTERVALS = 100
MAX_WINDOW = timedelta(days=30)
_DURATION = re.compile(r"(?:[0-9]+[smhd])+")
_DURATION_PART = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# A histogram's bars, from one occurrence to the most in an interval; none is a blank.
BARS = " ▁▂▃▄▅▆▇█"
ASCII_BARS = " .:-=+*#@"


def add_fleet_commands(
    faults_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Adds `faults tail` and `faults top`, made by `command` as the other commands are."""
    tail = command(
        faults_commands,
        "tail",
        "follow the faults of every instance as they are recorded (admins)",
        "Print the latest faults of every instance, then each new occurrence as it is "
        "recorded, one line each: time, instance, source, count, message. Ctrl-C stops. "
        "Asks as an admin: faultsvc answers admins only.",
    )
    _add_filter_options(tail)
    tail.add_argument(
        "-n",
        "--lines",
        type=bounded_count(0, MAX_LINES),
        default=10,
        metavar="N",
        help=f"latest faults printed first, 0 to {MAX_LINES:,} (default: 10)",
    )
    tail.set_defaults(func=tail_command)

    top = command(
        faults_commands,
        "top",
        "the faults that occurred most lately, with their trend (admins)",
        "Print the faults that occurred most in a window, each with how many times it "
        "occurred and a histogram of its occurrences per interval, oldest first: whether "
        "it is growing or fading. Asks as an admin: faultsvc answers admins only.",
    )
    _add_filter_options(top)
    top.add_argument(
        "--since",
        type=duration,
        default=timedelta(hours=1),
        metavar="DURATION",
        help="the window: the last 90s, 30m, 1h, 1h30m, 2d... (default: 1h, at most 30d)",
    )
    top.add_argument(
        "--limit",
        type=bounded_count(1, MAX_RANKED),
        default=10,
        metavar="N",
        help=f"faults to print, 1 to {MAX_RANKED} (default: 10)",
    )
    top.add_argument(
        "--intervals",
        type=bounded_count(1, MAX_INTERVALS),
        default=12,
        metavar="N",
        help=f"intervals of the histogram, 1 to {MAX_INTERVALS} (default: 12)",
    )
    top.set_defaults(func=top_command)


def _add_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", metavar="S", help="only faults this component reported")
    parser.add_argument("--host", metavar="H", help="only faults reported from this host")
    parser.add_argument("--instance", metavar="ID", help="only the faults of this instance")


def tail_command(args: argparse.Namespace) -> int:
    try:
        return _as_admin(args, tail_faults)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def top_command(args: argparse.Namespace) -> int:
    return _as_admin(args, top_faults)


def _as_admin(
    args: argparse.Namespace,
    command: Callable[[FaultServiceClient, argparse.Namespace], Coroutine[Any, Any, int]],
) -> int:
    args.admin = True  # faultsvc answers admins only
    try:
        return run(args, command)
    except BrokenPipeError:
        # The reader went away (`| head`): that is where the output ends.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def bounded_count(low: int, high: int) -> Callable[[str], int]:
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high:,}, not {value}")
        return value

    return count


def duration(text: str) -> timedelta:
    """--since: whole numbers of s, m, h and d, e.g. 90s, 30m, 1h30m, 2d."""
    if not _DURATION.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (give e.g. 90s, 30m, 1h, 1h30m or 2d)"
        )
    length = sum(
        (timedelta(**{_UNITS[unit]: int(number)}) for number, unit in _DURATION_PART.findall(text)),
        timedelta(),
    )
    if not timedelta(0) < length <= MAX_WINDOW:
        raise argparse.ArgumentTypeError(f"must be more than 0s and at most 30d, not {text}")
    return length


def _filter_of(args: argparse.Namespace) -> str:
    return fleet_filter(instance_id=args.instance, source=args.source, host=args.host)


async def tail_faults(client: FaultServiceClient, args: argparse.Namespace) -> int:
    """The latest faults, then every new occurrence, until interrupted."""
    filter_ = _filter_of(args)
    shown: set[tuple[str, int]] = set()

    async def print_latest() -> None:
        # Once the watch is followed: an occurrence recorded meanwhile is both
        # in the latest faults and streamed; it is printed once.
        if not args.lines:
            return
        page = await client.search_faults(filter_, page_size=args.lines)
        for fault in reversed(page.faults):
            shown.add((fault.id, fault.occurrence_count))
            _print_line(args, fault_pb2.FaultOccurrence(fault=fault), fault.last_occur_time)

    def interrupted(error: FaultServiceError) -> None:
        print(
            f"faultsvc: {inert_line(error.details or error.code.name)}; resuming",
            file=sys.stderr,
            flush=True,
        )

    start: Callable[[], Awaitable[None]] | None = print_latest
    while True:
        try:
            async for occurrence in client.follow_faults(
                filter_, on_start=start, on_interruption=interrupted
            ):
                if (occurrence.fault.id, occurrence.fault.occurrence_count) not in shown:
                    _print_line(args, occurrence, occurrence.occur_time)
        except FaultServiceError as error:
            if error.code is not grpc.StatusCode.OUT_OF_RANGE:
                raise
            print(
                "faultsvc: the watch was interrupted for longer than the server replays: "
                "faults recorded meanwhile are not shown (faultsvc faults top, or find, "
                "shows them); following from now",
                file=sys.stderr,
                flush=True,
            )
            start = None


def _print_line(
    args: argparse.Namespace, occurrence: fault_pb2.FaultOccurrence, at: Timestamp
) -> None:
    if args.json:
        data = json_format.MessageToDict(occurrence, preserving_proto_field_name=True)
        print(json.dumps(data, ensure_ascii=True), flush=True)
        return
    fault = occurrence.fault
    print(
        f"{_utc(at)}  {inert_line(fault.instance_id)}  {inert_line(fault.source) or '-'}"
        f"  x{fault.occurrence_count or 1}  {inert_line(fault.message)}",
        flush=True,
    )


async def top_faults(client: FaultServiceClient, args: argparse.Namespace) -> int:
    """The faults that occurred most in the window, with their histograms."""
    ranking = await client.rank_faults(
        _filter_of(args),
        start_time=datetime.now(UTC) - args.since,
        interval_count=args.intervals,
        max_faults=args.limit,
    )
    if args.json:
        print(inert_json(json_format.MessageToDict(ranking, preserving_proto_field_name=True)))
        return EXIT_OK
    window = f"{_utc(ranking.start_time)} to {_utc(ranking.end_time)}"
    if not ranking.ranked_faults:
        print(f"No fault occurred from {window}.")
        return EXIT_OK
    interval = _spoken(ranking.interval.ToTimedelta())
    print(f"Faults that occurred most from {window}, by intervals of {interval}:")
    bars = BARS if _can_print(BARS) else ASCII_BARS
    table = PrettyTable(["Count", "Trend", "Last", "Instance", "Source", "Message"])
    table.align = "l"
    table.align["Count"] = "r"
    for ranked in ranking.ranked_faults:
        fault = ranked.fault
        table.add_row(
            [
                ranked.occurrence_count,
                histogram(ranked.interval_counts, bars),
                _utc(fault.last_occur_time),
                inert_line(fault.instance_id),
                inert_line(fault.source),
                inert_line(fault.message),
            ]
        )
    print(table.get_string())
    return EXIT_OK


def histogram(counts: Sequence[int], bars: str = BARS) -> str:
    """One bar per interval, oldest first, the highest for the interval with the most."""
    most = max(counts, default=0)
    steps = len(bars) - 1
    return "".join(
        bars[0] if count == 0 else bars[max(1, round(count / most * steps))] for count in counts
    )


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _utc(stamp: Timestamp) -> str:
    return stamp.ToDatetime().isoformat(timespec="seconds") + "Z"


def _spoken(length: timedelta) -> str:
    """A length of time as people say it: 5 minutes, 2 hours, 90 seconds."""
    seconds = round(length.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    if seconds >= 1:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{length.total_seconds() * 1000:.0f} ms"
