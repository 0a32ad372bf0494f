"""Credentials in reported faults are masked before they are stored: real leaks, one by one."""

from __future__ import annotations

import time

import pytest

from faultsvc.faults import TRUNCATION_MARKER, truncate_details
from faultsvc.policy.scrub import MASK, Scrubber
from tests.support.leaks import LEAKS

SCRUBBER = Scrubber()

# Text with no credential in it, which must come through unchanged.
INNOCENT = [
    """Traceback (most recent call last):
  File "/opt/stack/trove/trove/taskmanager/models.py", line 482, in _create_server
    server = self.nova_client.servers.create(
  File "/usr/lib/python3/dist-packages/novaclient/v2/servers.py", line 1480, in create
    return self._boot(response_key, *boot_args, **boot_kwargs)
novaclient.exceptions.Forbidden: Quota exceeded for cores: Requested 8, but already used 20 of \
20 cores (HTTP 403) (Request-ID: req-5c7e0c3e-8f1a-4f2b-9d1e-2f6c8b0a1d3e)""",
    "pymysql.err.OperationalError: (1045, \"Access denied for user 'root'@'10.0.0.5' "
    '(using password: YES)")',
    'psycopg2.OperationalError: FATAL:  password authentication failed for user "postgres"',
    "KeyError: 'password'",
    "Command: mysql -h db -P 3306 -u root --port 3306 -e 'SELECT 1'",
    "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 of http://controller:8774/v2.1/servers",
    "bypass=1 compass: north passes=3",
    "A guest error occurred",
    "",
]


@pytest.mark.parametrize("name", LEAKS)
def test_secrets_in_real_faults_are_masked(name: str) -> None:
    text, secrets = LEAKS[name]
    scrubbed = SCRUBBER.scrub(text)
    for secret in secrets:
        assert secret not in scrubbed
    assert MASK in scrubbed


def test_the_masks_say_what_was_masked() -> None:
    assert SCRUBBER.scrub("mysql -u root -pS3cret -e x") == "mysql -u root -p*** -e x"
    assert SCRUBBER.scrub("mysql+aiomysql://u:pw@db/f") == "mysql+aiomysql://u:***@db/f"
    assert SCRUBBER.scrub("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert SCRUBBER.scrub('{"password": "x", "user": "y"}') == '{"password": "***", "user": "y"}'
    assert SCRUBBER.scrub("--password hunter22 -v") == "--password *** -v"
    assert SCRUBBER.scrub("password=hunter22, user=y") == "password=***, user=y"


@pytest.mark.parametrize("text", INNOCENT)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert SCRUBBER.scrub(text) == text


@pytest.mark.parametrize("name", LEAKS)
def test_scrubbing_twice_changes_nothing_more(name: str) -> None:
    once = SCRUBBER.scrub(LEAKS[name][0])
    assert SCRUBBER.scrub(once) == once


def test_operators_add_patterns_and_choose_the_mask() -> None:
    scrubber = Scrubber([r"(?i)ticket=(?P<secret>\d+)", r"sk_live_\w+"], mask="[hidden]")
    assert scrubber.scrub("TICKET=1234 key sk_live_abc password=x") == (
        "TICKET=[hidden] key [hidden] password=[hidden]"
    )


def test_a_secret_that_the_cut_splits_is_masked_before_the_cut() -> None:
    """Cut first, and half a password is left that no pattern recognises."""
    credentials = "mysql+pymysql://trove:"
    kept_bytes = 65_535 - len("\n" + TRUNCATION_MARKER)
    details = "x" * (kept_bytes - len(credentials) - 12) + credentials
    details += "Sup3rS3cretPassw0rd@db.example/trove"
    assert "Sup3rS3cret" in SCRUBBER.scrub(truncate_details(details))
    stored = truncate_details(SCRUBBER.scrub_before_cut(details, 65_535))
    assert "Sup3r" not in stored


def test_text_beyond_the_cut_is_not_scrubbed_but_the_cut_stays_visible() -> None:
    key = "-----BEGIN PRIVATE KEY-----\n" + "A" * 200_000 + "\n-----END PRIVATE KEY-----"
    details = key + "\nTraceback after the key"
    kept = SCRUBBER.scrub_before_cut(details, 65_535)
    assert "AAAA" not in kept
    assert kept.endswith(TRUNCATION_MARKER)
    assert truncate_details(kept).endswith(TRUNCATION_MARKER)


@pytest.mark.parametrize(
    "unit",
    ["password", "mysql ", "a://b:", "--password ", "password '", "<password>", "x:", "Aa1"],
)
def test_scrubbing_cost_grows_linearly_with_hostile_text(unit: str) -> None:
    """Text a caller crafts must not make the patterns backtrack for seconds."""

    def seconds(length: int) -> float:
        text = (unit * (length // len(unit) + 1))[:length]
        fastest = float("inf")
        for _ in range(3):  # the fastest of three: other processes share the machine
            started = time.perf_counter()
            SCRUBBER.scrub(text)
            fastest = min(fastest, time.perf_counter() - started)
        return fastest

    small, large = seconds(8_192), seconds(131_072)
    assert large < 1.0
    # 16 times the text: linear is 16 times the time, quadratic 256 times.
    assert large < max(small, 0.005) * 64, "not linear"
