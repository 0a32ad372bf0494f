"""The checked-in generated code is what protos/ generates today."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "faultsvc" / "v1"
    checked_in = ROOT / "faultsvc" / "v1"
    names = sorted(path.name for path in fresh.iterdir())
    assert names, "the generator wrote nothing"
    _, mismatch, missing = filecmp.cmpfiles(fresh, checked_in, names, shallow=False)
    assert (mismatch, missing) == ([], []), "run: python scripts/gen_protos.py"
    stale = {p.name for p in checked_in.glob("*_pb2*")} - set(names)
    assert not stale, f"generated files without a proto: {stale}"
