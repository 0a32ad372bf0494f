"""Running `faultsvc` as an operator does, and reading what it said."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FAULTSVC = [sys.executable, "-m", "faultsvc"]
# A log line that tells progress, not a problem ("schema migrated ...", a warning).
PROGRESS = re.compile(r"\S+ \S+ (INFO|WARNING) ")
COMMAND_TIMEOUT = 60


@dataclass(frozen=True)
class Outcome:
    """How a command ended: its exit code and what it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """What it printed on stderr, without argparse's usage lines nor log lines below ERROR."""
        return [
            line
            for line in self.stderr.splitlines()
            if not line.startswith(("usage:", " ")) and not PROGRESS.match(line)
        ]

    @property
    def error(self) -> str:
        """The one line that says what is wrong; fails if there is not exactly one."""
        assert "Traceback" not in self.stderr, self.stderr
        assert len(self.error_lines) == 1, f"expected one line, got:\n{self.stderr}"
        return self.error_lines[0]


def faultsvc(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT
) -> Outcome:
    """Runs `faultsvc ARGS` in `cwd`, with no FAULTSVC_* variable but those of `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FAULTSVC_")}
    done = subprocess.run(
        [*FAULTSVC, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def serve_command(*args: str) -> Sequence[str]:
    return [*FAULTSVC, "serve", *args]
