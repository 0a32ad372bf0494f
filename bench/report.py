"""What a run measured: one row per (target, workload, load), shown as a table and saved as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prettytable import PrettyTable, TableStyle

ECHO = "echo"
PER_ROW_COMMIT = "per-row INSERT+COMMIT, no gRPC"
COLUMNS = (
    "Target",
    "Workers",
    "Workload",
    "In flight",
    "QPS",
    "p50 ms",
    "p99 ms",
    "QPS / echo",
    "p50 / echo",
    "p99 / echo",
    "CPU us/call",
)


@dataclass
class Row:
    """One measured cell: a target (echo, or the server on a backend) under one load."""

    target: str
    workers: int
    workload: str
    in_flight: int
    connections: int
    streams: int
    qps: float
    p50_ms: float
    p99_ms: float
    requests: int
    responses_seen: int = 0
    response_bytes: int = 0
    server_cpu_us_per_call: float = math.nan
    database_cpu_us_per_call: float = math.nan
    server_rss_mb: float = math.nan
    rows_written: int | None = None
    echo_qps: float = math.nan
    echo_p50_ms: float = math.nan
    echo_p99_ms: float = math.nan

    @property
    def qps_ratio(self) -> float:
        return self.qps / self.echo_qps

    @property
    def p50_ratio(self) -> float:
        return self.p50_ms / self.echo_p50_ms

    @property
    def p99_ratio(self) -> float:
        return self.p99_ms / self.echo_p99_ms

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(qps_ratio=self.qps_ratio, p50_ratio=self.p50_ratio, p99_ratio=self.p99_ratio)
        return {key: _finite(value) for key, value in data.items()}


@dataclass
class Report:
    """Everything a run produced: how it was made, the rows, and the soak, if any."""

    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    soak: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "rows": [row.as_json() for row in self.rows],
            "group_commit_vs_per_row": self.group_commit_factors(),
            "soak": self.soak,
        }

    def write(self, directory: Path, stamp: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        json_path = directory / f"{stamp}.json"
        json_path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        markdown_path = directory / f"{stamp}.md"
        markdown_path.write_text(self.markdown())
        return json_path, markdown_path

    def table(self, style: TableStyle = TableStyle.DEFAULT) -> PrettyTable:
        table = PrettyTable(COLUMNS)
        table.set_style(style)
        table.align = "r"
        table.align["Target"] = table.align["Workload"] = "l"
        for row in self.rows:
            is_echo = row.target == ECHO
            no_ratio = is_echo or row.workload == PER_ROW_COMMIT
            table.add_row(
                [
                    row.target,
                    row.workers,
                    row.workload,
                    row.in_flight,
                    f"{row.qps:,.0f}",
                    f"{row.p50_ms:.2f}",
                    f"{row.p99_ms:.2f}",
                    "" if no_ratio else f"{row.qps_ratio:.2f}",
                    "" if no_ratio else f"{row.p50_ratio:.1f}x",
                    "" if no_ratio else f"{row.p99_ratio:.1f}x",
                    _number(row.server_cpu_us_per_call),
                ]
            )
        return table

    def group_commit_factors(self) -> list[dict[str, Any]]:
        """RecordFault's QPS against the per-row-commit ceiling at the same concurrency."""
        ceilings = {
            (row.target, row.in_flight): row.qps
            for row in self.rows
            if row.workload == PER_ROW_COMMIT
        }
        factors = []
        for row in self.rows:
            ceiling = ceilings.get((row.target, row.in_flight))
            if row.workload == "RecordFault" and ceiling:
                factors.append(
                    {
                        "target": row.target,
                        "workers": row.workers,
                        "in_flight": row.in_flight,
                        "record_fault_qps": round(row.qps, 1),
                        "per_row_commit_rows_per_s": round(ceiling, 1),
                        "factor": round(row.qps / ceiling, 2),
                    }
                )
        return factors

    def text(self) -> str:
        lines = [self.table().get_string()]
        factors = self.group_commit_factors()
        if factors:
            lines.append("RecordFault against the per-row-commit ceiling at the same concurrency:")
            lines += [f"  {factor_line(item)}" for item in factors]
        return "\n".join(lines)

    def markdown(self) -> str:
        meta = self.meta
        mode = meta["mode"]
        lines = [
            f"Command: `{meta['command']}` (started {meta['started']})",
            "",
            f"Machine: {meta['cores']} cores ({meta['cpu']}), load generator on the same machine "
            f"(1-minute load average {meta['load_average_at_start']:.2f} before the run); "
            f"{meta['h2load']}; Python {meta['python']}, grpcio {meta['grpcio']}; "
            f"echo server on {meta.get('echo_loop', 'asyncio')}.",
            "",
            f"Each run: {mode['warmup_s']:g} s warm-up, then {mode['duration_s']:g} s measured; "
            f"{mode['seed_rows']:,} faults seeded; at most {mode['streams_per_connection']} "
            "streams per connection.",
            "",
        ]
        for backend, settings in meta.get("databases", {}).items():
            shown = ", ".join(f"{key}={value}" for key, value in settings.items())
            lines.append(f"- {backend}: {shown}")
        lines.append("")
        if self.rows:
            lines += [self.table(TableStyle.MARKDOWN).get_string(), ""]
        factors = self.group_commit_factors()
        if factors:
            lines += ["RecordFault against the per-row-commit ceiling at the same concurrency:", ""]
            lines += [f"- {factor_line(item)}" for item in factors]
            lines.append("")
        lines += [f"- {soak_line(soak)}" for soak in self.soak]
        return "\n".join(lines) + "\n"


def factor_line(item: dict[str, Any]) -> str:
    return (
        f"{item['target']}, {item['workers']} worker(s), {item['in_flight']} in flight: "
        f"{item['record_fault_qps']:,.0f} faults/s vs "
        f"{item['per_row_commit_rows_per_s']:,.0f} rows/s per-row commit ({item['factor']:.2f}x)"
    )


def soak_line(soak: dict[str, Any]) -> str:
    verdict = "flat" if soak["flat"] else "NOT flat"
    return (
        f"soak, {soak['target']}: RSS {soak['baseline_rss_mb']:.1f} MB after warm-up, "
        f"at most {soak['max_rss_mb']:.1f} MB, {soak['final_rss_mb']:.1f} MB at the end "
        f"over {soak['seconds']:.0f} s and {soak['calls']:,} calls: {verdict} "
        f"(growth {soak['growth_percent']:+.1f} %, limit {soak['limit_percent']:.0f} %)"
    )


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:,.0f}"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
