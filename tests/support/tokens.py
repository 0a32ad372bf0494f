"""The service tokens of the tests' callers, and the tokens file that configures them."""

from __future__ import annotations

# A service that forwards its user's roles in x-roles.
FORWARDING_TOKEN = "forwarding-service-token-3b0c5e1f8a9d"
# The operators' CLI: admin whatever it sends.
ADMIN_TOKEN = "operators-admin-token-9e8d7c6b5a4f"
# A dashboard: a reader, even if it claims more.
READER_TOKEN = "dashboard-reader-token-1a2b3c4d5e6f"

TOKENS_FILE = f"""\
# tokens of the services that call faultsvc
{FORWARDING_TOKEN}

{ADMIN_TOKEN} roles=admin   # the operators' CLI
{READER_TOKEN} roles=reader
"""


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")
