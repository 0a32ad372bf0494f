"""The `faultsvc` command, also run as `python -m faultsvc`."""

import os

# grpc's C core writes its INFO lines ("Got goaway") to stderr unless told
# otherwise, and reads this when grpc is imported: before faultsvc.cli.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from faultsvc.cli import main

if __name__ == "__main__":
    main()
