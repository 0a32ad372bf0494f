"""Generates the Python code of the contract from protos/.

protos/faultsvc/v1/x.proto becomes faultsvc/v1/x_pb2.py, x_pb2.pyi, x_pb2_grpc.py
and x_pb2_grpc.pyi: the proto package path is the Python package path, so the
generated absolute imports work as they are.

    python scripts/gen_protos.py            # regenerate in place
    python scripts/gen_protos.py --out DIR  # generate into DIR (the drift test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PLUGINS = Path(sys.executable).parent


def proto_files() -> list[Path]:
    return sorted(PROTOS.glob("faultsvc/**/*.proto"))


def generate(out: Path) -> None:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTOS}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={PLUGINS / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={PLUGINS / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(path.relative_to(PROTOS)) for path in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="where faultsvc/v1/ is written")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
