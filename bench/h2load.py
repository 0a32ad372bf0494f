"""Driving a gRPC server with h2load and checking that every call succeeded.

h2load speaks plain HTTP/2. A unary gRPC call over h2c is a POST to
/package.Service/Method with `content-type: application/grpc` and
`te: trailers`, whose body is one length-prefixed message: a zero byte (no
compression), the message length as a big-endian uint32, then the message.

h2load counts HTTP statuses only, and a failed gRPC call is HTTP 200 too, so
success is checked per response from what h2load can show:

- With `-v`, h2load prints the header fields of every response's HEADERS frame
  (not the trailers). gRPC sends a call that fails before its response message
  as Trailers-Only: `grpc-status` in that HEADERS frame, with no DATA. So every
  response is seen, and any `grpc-status` among its headers is a failed call.
- A successful unary call carries exactly one response message in DATA. The
  DATA bytes h2load received must equal (5 + response size) for each response
  seen: a response without a message would be missing from that sum.

Both counts include the warm-up, as h2load's traffic totals do. Anything
h2load itself calls failed, errored or timed out also makes the run invalid.
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")

_FINISHED = re.compile(r"^finished in [\d.]+\w*s, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)
_STATUS_CODES = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_DATA_BYTES = re.compile(r"^traffic: .*\((\d+)\) data")
_RESPONSE_HEADER = re.compile(r"^\[stream_id=\d+\] (\S+?): (.*)$")


class InvalidRun(Exception):
    """The load run cannot be trusted: a call failed or h2load reported an error."""


@dataclass(frozen=True, slots=True)
class Load:
    """How many calls are in flight: `connections` HTTP/2 connections x `streams` each."""

    connections: int
    streams: int

    @property
    def in_flight(self) -> int:
        return self.connections * self.streams


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one h2load run measured, summed over its processes."""

    qps: float
    requests: int
    latencies_us: tuple[int, ...]
    responses_seen: int
    failed_statuses: tuple[str, ...]
    data_bytes: int
    h2load_failures: int
    non_2xx: int

    def percentile_ms(self, fraction: float) -> float:
        return percentile(self.latencies_us, fraction) / 1000.0


def percentile(values: Sequence[int], fraction: float) -> float:
    """The nearest-rank percentile (no interpolation: a latency somebody really saw)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def grpc_frame(message: bytes) -> bytes:
    """The body of a unary gRPC request: uncompressed flag, length, message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def require_h2load() -> str:
    path = shutil.which("h2load")
    if path is None:
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client")
    return path


def version() -> str:
    result = subprocess.run(
        [require_h2load(), "--version"], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def run(
    target: str,
    method: str,
    bodies: Sequence[bytes],
    load: Load,
    *,
    duration_s: float,
    warmup_s: float,
    headers: Sequence[str] = (),
    workdir: Path,
) -> Measurement:
    """Runs h2load against `target` (HOST:PORT) for `duration_s` after `warmup_s`."""
    return start(
        target,
        method,
        bodies,
        load,
        duration_s=duration_s,
        warmup_s=warmup_s,
        headers=headers,
        workdir=workdir,
    ).wait()


@dataclass
class Running:
    """h2load processes started together; `wait` collects what they measured."""

    processes: list[tuple[subprocess.Popen[bytes], Path, Path]]
    bodies: list[Path]
    timeout_s: float

    def wait(self) -> Measurement:
        parts = []
        for process, out_file, log_file in self.processes:
            try:
                code = process.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise InvalidRun(f"h2load did not finish in {self.timeout_s:.0f} s") from None
            if code != 0:
                tail = out_file.read_text(errors="replace")[-2000:]
                raise InvalidRun(f"h2load exited with {code}:\n{tail}")
            parts.append(_parse(out_file, log_file))
            out_file.unlink()
            log_file.unlink()
        for body_file in self.bodies:
            body_file.unlink(missing_ok=True)
        return Measurement(
            qps=sum(part.qps for part in parts),
            requests=sum(part.requests for part in parts),
            latencies_us=tuple(value for part in parts for value in part.latencies_us),
            responses_seen=sum(part.responses_seen for part in parts),
            failed_statuses=tuple(status for part in parts for status in part.failed_statuses),
            data_bytes=sum(part.data_bytes for part in parts),
            h2load_failures=sum(part.h2load_failures for part in parts),
            non_2xx=sum(part.non_2xx for part in parts),
        )


def start(
    target: str,
    method: str,
    bodies: Sequence[bytes],
    load: Load,
    *,
    duration_s: float,
    warmup_s: float,
    headers: Sequence[str] = (),
    workdir: Path,
) -> Running:
    """Starts h2load against `target` (HOST:PORT) for `duration_s` after `warmup_s`.

    Each body gets its own h2load process with an equal share of the
    connections (h2load sends one body per process), all running at once.
    """
    if load.connections % len(bodies):
        raise ValueError(f"{load.connections} connections do not split over {len(bodies)} bodies")
    per_process = load.connections // len(bodies)
    h2load = require_h2load()
    processes = []
    body_files = []
    for body in bodies:
        body_file = _unused(workdir, "body", ".bin")
        body_files.append(body_file)
        body_file.write_bytes(grpc_frame(body))
        log_file = _unused(workdir, "latency", ".tsv")
        out_file = _unused(workdir, "h2load", ".out")
        command = [
            h2load,
            f"--clients={per_process}",
            f"--max-concurrent-streams={load.streams}",
            "--threads=1",
            f"--duration={_duration(duration_s)}",
            f"--warm-up-time={_duration(warmup_s)}",
            f"--data={body_file}",
            f"--log-file={log_file}",
            "--verbose",
        ]
        for header in (*GRPC_HEADERS, *headers):
            command += ["--header", header]
        command.append(f"http://{target}{method}")
        with out_file.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        processes.append((process, out_file, log_file))
    return Running(processes, body_files, timeout_s=warmup_s + duration_s + 60.0)


def check(measurement: Measurement, response_sizes: tuple[int, int], load: Load) -> None:
    """Raises InvalidRun unless every response was a successful call.

    `response_sizes` is the (smallest, largest) serialized response message.
    Calls still in flight when h2load stopped may have their HEADERS counted
    without their DATA, so up to `load.in_flight` messages may be missing.
    """
    if measurement.h2load_failures or measurement.non_2xx:
        raise InvalidRun(
            f"h2load: {measurement.h2load_failures} failed/errored/timed out, "
            f"{measurement.non_2xx} non-2xx HTTP statuses"
        )
    if measurement.failed_statuses:
        shown = sorted(set(measurement.failed_statuses))[:5]
        raise InvalidRun(
            f"{len(measurement.failed_statuses)} calls failed, grpc-status {', '.join(shown)}"
        )
    if measurement.requests == 0 or measurement.responses_seen < measurement.requests:
        raise InvalidRun(
            f"saw {measurement.responses_seen} responses for {measurement.requests} requests"
        )
    smallest, largest = (5 + size for size in response_sizes)
    most = measurement.responses_seen * largest
    least = max(0, measurement.responses_seen - load.in_flight) * smallest
    if not least <= measurement.data_bytes <= most:
        raise InvalidRun(
            f"{measurement.data_bytes} bytes of response messages for "
            f"{measurement.responses_seen} responses of {response_sizes[0]}-{response_sizes[1]} "
            "bytes: some responses carried no message"
        )


@dataclass(frozen=True, slots=True)
class _Part:
    qps: float
    requests: int
    latencies_us: list[int]
    responses_seen: int
    failed_statuses: list[str]
    data_bytes: int
    h2load_failures: int
    non_2xx: int


def _parse(out_file: Path, log_file: Path) -> _Part:
    qps = math.nan
    requests = data_bytes = failures = non_2xx = -1
    seen = 0
    failed_statuses: list[str] = []
    with out_file.open(errors="replace") as lines:
        for line in lines:
            header = _RESPONSE_HEADER.match(line)
            if header is not None:
                name, value = header.groups()
                if name == ":status":
                    seen += 1
                elif name == "grpc-status":
                    failed_statuses.append(value.strip())
                continue
            if match := _FINISHED.match(line):
                qps = float(match.group(1))
            elif match := _REQUESTS.match(line):
                counts = [int(group) for group in match.groups()]
                requests = counts[3]
                failures = counts[4] + counts[5] + counts[6]
            elif match := _STATUS_CODES.match(line):
                non_2xx = sum(int(group) for group in match.groups()[1:])
            elif match := _DATA_BYTES.match(line):
                data_bytes = int(match.group(1))
    if math.isnan(qps) or min(requests, data_bytes, failures, non_2xx) < 0:
        raise InvalidRun(f"could not read h2load's summary in {out_file}")
    latencies = []
    with log_file.open() as rows:
        for row in rows:
            columns = row.split("\t")
            if len(columns) >= 3:
                latencies.append(int(columns[2]))
    return _Part(qps, requests, latencies, seen, failed_statuses, data_bytes, failures, non_2xx)


def _unused(workdir: Path, stem: str, suffix: str) -> Path:
    index = 0
    while (workdir / f"{stem}-{index}{suffix}").exists():
        index += 1
    path = workdir / f"{stem}-{index}{suffix}"
    path.touch()
    return path


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"
