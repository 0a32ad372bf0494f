"""`faultsvc show` and `faultsvc faults list` run as people run them, against the real server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from faultsvc.app import FaultServer, build_server
from faultsvc.config import Settings
from faultsvc_client import FaultServiceClient, RequestIds
from faultsvc_client.cli import EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, build_parser
from tests.clients.processes import python_env, run_python_async
from tests.security.certificates import CertificateAuthority
from tests.support.servers import free_port

CLI = ("-m", "faultsvc_client.cli")
TRACEBACK = """Traceback (most recent call last):
  File "/opt/trove/guestagent/manager.py", line 265, in prepare
    cluster_config, snapshot, modules)
  File "/opt/trove/guestagent/manager.py", line 355, in _prepare
    raise RuntimeError("A guest error occurred")
RuntimeError: A guest error occurred"""
FAULT_DATE = datetime(2026, 5, 6, 21, 30, 6, 250000, tzinfo=UTC)
REQUEST_IDS = RequestIds(
    request_id="req-5f1c7a3e-2b7d-4c43-9a55-3c8d0f3b8e21",
    global_request_id="req-0b8f6b2a-7e0f-4b1e-8a0e-9d6c1e2f3a4b",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
)


async def record_guest_error(client: FaultServiceClient, instance: str) -> str:
    fault = await client.record_fault(
        instance,
        "A guest error occurred",
        details=TRACEBACK,
        source="guestagent",
        host="db-host-1",
        occur_time=FAULT_DATE,
        request_ids=REQUEST_IDS,
    )
    return fault.id


async def test_show_prints_the_fault_with_its_traceback_to_an_admin(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    fault_id = await record_guest_error(admin_client, instance)

    shown = await run_python_async([*CLI, "show", instance, "--target", server.target, "--admin"])

    assert shown.returncode == 0, shown.stderr
    header = shown.stdout.splitlines()[1]
    assert table_lines(header) == [["Property", "Value"]]
    rows = table_rows(shown.stdout)
    assert rows["fault_date"] == ["2026-05-06T21:30:06"]
    assert rows["first_fault_date"] == ["2026-05-06T21:30:06"]
    assert rows["occurrence_count"] == ["1"]
    assert rows["fault_message"] == ["A guest error occurred"]
    assert rows["fault_details"] == TRACEBACK.splitlines()
    assert rows["fault_id"] == [fault_id]
    assert rows["instance_id"] == [instance]
    assert rows["source"] == ["guestagent"]
    assert rows["host"] == ["db-host-1"]
    assert rows["request_id"] == [REQUEST_IDS.request_id]
    assert rows["global_request_id"] == [REQUEST_IDS.global_request_id]
    assert rows["trace_id"] == [REQUEST_IDS.trace_id]
    assert list(rows) == sorted(rows), "properties are sorted, as trove show sorts them"
    assert shown.stderr == ""


async def test_show_dates_a_repeated_fault_by_its_latest_occurrence(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    fault_id = await record_guest_error(admin_client, instance)
    for minutes in (5, 2):  # the second reported late: it is not the latest
        await admin_client.record_fault(
            instance,
            f"A guest error occurred after {minutes} minutes",
            details=TRACEBACK.replace("line 265", f"line {minutes}"),
            source="guestagent",
            occur_time=FAULT_DATE + timedelta(minutes=minutes),
        )

    shown = await run_python_async([*CLI, "show", instance, "--target", server.target])

    assert shown.returncode == 0, shown.stderr
    rows = table_rows(shown.stdout)
    assert rows["fault_id"] == [fault_id]
    assert rows["fault_date"] == ["2026-05-06T21:35:06"]
    assert rows["first_fault_date"] == ["2026-05-06T21:30:06"]
    assert rows["occurrence_count"] == ["3"]
    assert rows["fault_message"] == ["A guest error occurred after 5 minutes"]


async def test_show_hides_the_traceback_from_others(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    await record_guest_error(admin_client, instance)

    shown = await run_python_async([*CLI, "show", instance, "--target", server.target])

    assert shown.returncode == 0, shown.stderr
    rows = table_rows(shown.stdout)
    assert "fault_details" not in rows
    assert "host" not in rows, "admin-only: no empty row either"
    assert "trace_id" not in rows, "admin-only: no empty row either"
    assert rows["request_id"] == [REQUEST_IDS.request_id]
    assert rows["global_request_id"] == [REQUEST_IDS.global_request_id]
    assert rows["fault_message"] == ["A guest error occurred"]
    assert rows["fault_date"] == ["2026-05-06T21:30:06"]
    assert "Traceback" not in shown.stdout


async def test_show_json_keeps_the_proto_field_names(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    fault_id = await record_guest_error(admin_client, instance)

    as_admin = await run_python_async(
        [*CLI, "show", instance, "--target", server.target, "--admin", "--json"]
    )
    as_user = await run_python_async([*CLI, "show", instance, "--target", server.target, "--json"])

    assert as_admin.returncode == as_user.returncode == 0
    fault = json.loads(as_admin.stdout)
    assert fault["id"] == fault_id
    assert fault["instance_id"] == instance
    assert fault["details"] == TRACEBACK
    assert fault["create_time"] == fault["last_occur_time"] == "2026-05-06T21:30:06.250Z"
    assert fault["occurrence_count"] == "1"  # int64 in JSON, as protobuf writes it
    assert "details" not in json.loads(as_user.stdout)


async def test_show_says_when_the_instance_has_no_fault(server: FaultServer) -> None:
    instance = str(uuid.uuid4())

    shown = await run_python_async([*CLI, "show", instance, "--target", server.target])
    as_json = await run_python_async([*CLI, "show", instance, "--target", server.target, "--json"])

    assert (shown.returncode, shown.stdout) == (0, f"Instance {instance} has no fault.\n")
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, None)


async def test_show_finds_the_server_through_faultsvc_target(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    await record_guest_error(admin_client, instance)

    shown = await run_python_async(
        [*CLI, "show", instance], env=python_env(FAULTSVC_TARGET=server.target)
    )

    assert shown.returncode == 0, shown.stderr
    assert table_rows(shown.stdout)["fault_message"] == ["A guest error occurred"]


async def test_show_says_in_one_line_when_the_server_is_down() -> None:
    target = f"127.0.0.1:{free_port()}"

    shown = await run_python_async([*CLI, "show", str(uuid.uuid4()), "--target", target])

    assert shown.returncode == EXIT_UNAVAILABLE
    assert shown.stdout == ""
    assert shown.stderr == f"error: cannot reach faultsvc at {target}\n"


async def test_show_names_the_rejected_argument(server: FaultServer) -> None:
    shown = await run_python_async([*CLI, "show", "x" * 65, "--target", server.target])

    assert shown.returncode == EXIT_REFUSED
    assert shown.stderr.startswith("error: invalid argument: instance_id: ")
    assert len(shown.stderr.splitlines()) == 1


async def test_show_without_an_instance_is_a_usage_error() -> None:
    shown = await run_python_async([*CLI, "show"])

    assert shown.returncode == EXIT_USAGE
    assert "INSTANCE_ID" in shown.stderr


async def test_faults_list_prints_the_history_newest_first(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    ids = [
        (
            await admin_client.record_fault(
                instance,
                f"error {n}",
                details=f"Traceback {n}\nline two",
                source="taskmanager",
                occur_time=FAULT_DATE + timedelta(minutes=n),
                fingerprint=str(n),
            )
        ).id
        for n in range(3)
    ]

    as_admin = await run_python_async(
        [*CLI, "faults", "list", instance, "--target", server.target, "--admin"]
    )
    as_user = await run_python_async([*CLI, "faults", "list", instance, "--target", server.target])

    assert as_admin.returncode == as_user.returncode == 0
    admin_header, *admin_rows = table_lines(as_admin.stdout)
    assert admin_header == ["Date", "Count", "Fault ID", "Source", "Message", "Details"]
    assert [row[2] for row in admin_rows if row[2]] == ids[::-1]
    assert admin_rows[0] == [
        *("2026-05-06T21:32:06", "1", ids[2], "taskmanager", "error 2", "Traceback 2")
    ]
    assert admin_rows[1] == ["", "", "", "", "", "line two"]

    user_header, *user_rows = table_lines(as_user.stdout)
    assert user_header == ["Date", "Count", "Fault ID", "Source", "Message"]
    assert [row[4] for row in user_rows] == ["error 2", "error 1", "error 0"]
    assert "Traceback" not in as_user.stdout


async def test_faults_list_pages_and_follows_every_page_with_all(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    for n in range(5):
        await admin_client.record_fault(
            instance, f"error {n}", occur_time=FAULT_DATE + timedelta(seconds=n), fingerprint=str(n)
        )
    listing = [*CLI, "faults", "list", instance, "--target", server.target, "--page-size", "2"]

    first_page = await run_python_async(listing)
    everything = await run_python_async([*listing, "--all"])
    as_json = await run_python_async([*listing, "--all", "--json"])

    assert [row[4] for row in table_lines(first_page.stdout)[1:]] == ["error 4", "error 3"]
    assert "--all" in first_page.stderr
    assert [row[4] for row in table_lines(everything.stdout)[1:]] == [
        f"error {n}" for n in range(4, -1, -1)
    ]
    assert everything.stderr == ""
    listed = json.loads(as_json.stdout)
    assert [fault["message"] for fault in listed] == [f"error {n}" for n in range(4, -1, -1)]
    assert as_json.stderr == ""


async def test_faults_list_says_when_there_are_none(server: FaultServer) -> None:
    instance = str(uuid.uuid4())
    listing = [*CLI, "faults", "list", instance, "--target", server.target]

    listed = await run_python_async(listing)
    as_json = await run_python_async([*listing, "--json"])

    assert (listed.returncode, listed.stdout) == (0, f"Instance {instance} has no faults.\n")
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])


@pytest.mark.parametrize("size", ["5000", "1001", "0", "-1", "ten"])
async def test_faults_list_refuses_a_page_size_the_server_would_not_serve(size: str) -> None:
    # No server: the command line alone is wrong, whatever faultsvc would say.
    target = f"127.0.0.1:{free_port()}"

    listed = await run_python_async(
        [*CLI, "faults", "list", "i-1", "--target", target, "--page-size", size]
    )

    assert listed.returncode == EXIT_USAGE
    assert listed.stdout == ""
    assert listed.stderr.splitlines()[-1].startswith(
        "faultsvc faults list: error: argument --page-size: "
    )
    assert "Traceback" not in listed.stderr


@pytest.mark.parametrize("seconds", ["-1", "0", "nan", "inf", "1e300", "soon"])
async def test_a_timeout_grpc_cannot_wait_for_is_a_usage_error(seconds: str) -> None:
    target = f"127.0.0.1:{free_port()}"

    shown = await run_python_async([*CLI, "show", "i-1", "--target", target, "--timeout", seconds])

    assert shown.returncode == EXIT_USAGE
    assert shown.stderr.splitlines()[-1].startswith("faultsvc show: error: argument --timeout: ")
    assert "did not answer" not in shown.stderr


async def test_the_faultsvc_command_has_show(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    await record_guest_error(admin_client, instance)

    shown = await run_python_async(
        ["-m", "faultsvc", "show", instance, "--target", server.target, "--admin"]
    )

    assert shown.returncode == 0, shown.stderr
    assert table_rows(shown.stdout)["fault_details"] == TRACEBACK.splitlines()


def table_lines(table: str) -> list[list[str]]:
    """The cells of each line of a PrettyTable, without its borders."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("|")
    ]


def table_rows(table: str) -> dict[str, list[str]]:
    """A Property/Value table as property -> the lines of its value."""
    rows: dict[str, list[str]] = {}
    name = ""
    for line in table.splitlines()[3:]:
        if not line.startswith("|"):
            continue
        property_cell, value_cell = line.strip("|").split("|", 1)
        name = property_cell.strip() or name
        rows.setdefault(name, []).append(value_cell[1:].rstrip().removesuffix("|").rstrip())
    return rows


# What a fault's text can carry to an operator's terminal: OSC 52 (writes the
# clipboard), OSC 0 (sets the window title), CSI (clears the screen, moves the
# cursor), a carriage return that hides what came before, an 8-bit CSI, a
# right-to-left override that reverses what follows, NUL and DEL.
HOSTILE = (
    "\x1b]52;c;cm0gLXJmIH4=\x07 \x1b]0;owned\x1b\\ \x1b[2J\x1b[1;1H \r"
    "\x9b31m \u202etxt.exe \x00\x7f"
)


def printed_inertly(output: str) -> bool:
    """Whether `output` holds nothing a terminal acts on but line breaks."""
    return all(char.isprintable() or char == "\n" for char in output)


async def test_every_output_shows_stored_control_characters_escaped(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    recorded = await admin_client.record_fault(
        instance,
        f"Guest error {HOSTILE}",
        details=f"Traceback {HOSTILE}\n{HOSTILE}",
        source=f"taskmanager{HOSTILE}",
        host=f"db-7{HOSTILE}",
    )
    assert recorded.message == f"Guest error {HOSTILE}", "stored as sent"
    show = [*CLI, "show", instance, "--target", server.target, "--admin"]
    listing = [*CLI, "faults", "list", instance, "--target", server.target, "--admin"]

    outputs = [
        await run_python_async(command)
        for command in (show, [*show, "--json"], listing, [*listing, "--json"])
    ]

    for output in outputs:
        assert output.returncode == 0, output.stderr
        assert printed_inertly(output.stdout), repr(output.stdout)
    table, shown_json, history, listed_json = (output.stdout for output in outputs)
    escaped = (
        "\\x1b]52;c;cm0gLXJmIH4=\\x07 \\x1b]0;owned\\x1b\\ \\x1b[2J\\x1b[1;1H \\r"
        "\\x9b31m \\u202etxt.exe \\x00\\x7f"
    )
    rows = table_rows(table)
    assert rows["fault_message"] == [f"Guest error {escaped}"]
    assert rows["source"] == [f"taskmanager{escaped}"]
    assert rows["host"] == [f"db-7{escaped}"]
    # In details a carriage return ends a line, as the traceback's author meant.
    before_cr, after_cr = escaped.split(" \\r")
    assert rows["fault_details"] == [f"Traceback {before_cr}", after_cr, before_cr, after_cr]
    assert history.count("\\x1b]52;c;") == 4  # source, message, details twice
    assert json.loads(shown_json)["details"] == recorded.details
    assert json.loads(listed_json)[0]["host"] == recorded.host


async def test_64_kb_of_escape_sequences_are_printed_inertly(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    await admin_client.record_fault(
        instance, "\x1b[5m" * 50, details=("\x1b]0;x\x07\x9b2J\r\n" * 6000)[:65_000]
    )

    shown = await run_python_async([*CLI, "show", instance, "--target", server.target, "--admin"])

    assert shown.returncode == 0, shown.stderr
    assert printed_inertly(shown.stdout)
    assert len(table_rows(shown.stdout)["fault_details"]) >= 5_000


async def test_an_instance_id_with_escapes_is_echoed_inertly(server: FaultServer) -> None:
    instance = "i-\x1b]0;owned\x07"

    shown = await run_python_async([*CLI, "show", instance, "--target", server.target])

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "Instance i-\\x1b]0;owned\\x07 has no fault.\n"


async def test_a_token_metadata_cannot_carry_is_one_line_not_a_traceback() -> None:
    target = f"127.0.0.1:{free_port()}"

    shown = await run_python_async([*CLI, "show", "i-1", "--target", target, "--token", "sécret"])

    assert shown.returncode == EXIT_REFUSED
    assert shown.stderr == (
        "error: invalid argument: the token holds characters gRPC metadata cannot carry"
        " (only printable ASCII)\n"
    )


@dataclass(frozen=True)
class TlsServers:
    """A server that serves TLS, one that also asks for client certificates, and their CA."""

    tls: FaultServer
    mutual: FaultServer
    ca_file: Path
    client_cert: tuple[Path, Path]


@pytest.fixture
async def tls_servers(database_url: str, tmp_path: Path) -> AsyncIterator[TlsServers]:
    ca = CertificateAuthority("faultsvc test CA")
    cert, key = ca.issue_server("localhost").write(tmp_path, "server")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.pem)
    client_cert = ca.issue_client("operator").write(tmp_path, "operator")
    tls = Settings(listen="127.0.0.1:0", database_url=database_url, tls_cert=cert, tls_key=key)
    servers = TlsServers(
        await build_server(tls),
        await build_server(tls.model_copy(update={"tls_client_ca": ca_file})),
        ca_file,
        client_cert,
    )
    for server in (servers.tls, servers.mutual):
        await server.start()
    yield servers
    for server in (servers.tls, servers.mutual):
        await server.stop()


async def test_a_tls_server_called_without_ca_file_is_named_as_the_likely_reason(
    tls_servers: TlsServers,
) -> None:
    target = tls_servers.tls.target

    shown = await run_python_async([*CLI, "show", "i-1", "--target", target])

    assert shown.returncode == EXIT_UNAVAILABLE
    assert shown.stderr == (
        f"error: cannot reach faultsvc at {target}: it closed the connection;"
        " if it serves TLS, give --ca-file\n"
    )


async def test_tls_mistakes_are_told_apart(
    tls_servers: TlsServers, server: FaultServer, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(CertificateAuthority("another CA").pem)
    ca_file = str(tls_servers.ca_file)
    cert_file, key_file = map(str, tls_servers.client_cert)

    untrusted, plaintext, no_certificate, mutual = [
        await run_python_async([*CLI, "show", "i-1", "--target", target, *options])
        for target, options in [
            (tls_servers.tls.target, ["--ca-file", str(other_ca)]),
            (server.target, ["--ca-file", ca_file]),
            (tls_servers.mutual.target, ["--ca-file", ca_file]),
            (
                tls_servers.mutual.target,
                ["--ca-file", ca_file, "--cert-file", cert_file, "--key-file", key_file],
            ),
        ]
    ]

    for refused in (untrusted, plaintext, no_certificate):
        assert refused.returncode == EXIT_UNAVAILABLE
        assert "Traceback" not in refused.stderr
    assert untrusted.stderr.endswith(": its certificate is not signed by the CA of --ca-file\n")
    assert plaintext.stderr.endswith("; it may not serve TLS (drop --ca-file)\n")
    assert no_certificate.stderr.endswith(
        "; if it requires client certificates, give --cert-file and --key-file\n"
    )
    assert (mutual.returncode, mutual.stdout) == (0, "Instance i-1 has no fault.\n")


async def test_faults_find_goes_from_a_request_id_to_the_faults_of_every_instance(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instances = [str(uuid.uuid4()) for _ in range(2)]
    fault_ids = [await record_guest_error(admin_client, instance) for instance in instances]

    found = await run_python_async(
        [
            *CLI,
            "faults",
            "find",
            "--request-id",
            REQUEST_IDS.request_id,
            "--target",
            server.target,
            "--json",
        ]
    )
    assert found.returncode == 0, found.stderr
    faults = json.loads(found.stdout)
    assert {fault["id"] for fault in faults} >= set(fault_ids)
    assert {fault["instance_id"] for fault in faults} >= set(instances)
    assert all(fault["details"] == TRACEBACK for fault in faults)  # asked as an admin

    table = await run_python_async(
        [
            *CLI,
            "faults",
            "find",
            "--global-request-id",
            REQUEST_IDS.global_request_id,
            "--target",
            server.target,
        ]
    )
    assert table.returncode == 0, table.stderr
    assert all(instance in table.stdout for instance in instances)

    nothing = await run_python_async(
        [*CLI, "faults", "find", "--request-id", "req-none", "--target", server.target]
    )
    assert (nothing.returncode, nothing.stdout) == (0, "No fault carries that request id.\n")

    neither = await run_python_async([*CLI, "faults", "find", "--target", server.target])
    assert neither.returncode == EXIT_USAGE
    assert neither.stderr == (
        "faultsvc faults find: give --request-id, --global-request-id, or both\n"
    )


def test_faults_find_asking_as_an_admin_leaves_the_other_commands_as_they_were() -> None:
    parser = build_parser()
    assert parser.parse_args(["show", "i-1"]).admin is False
    assert parser.parse_args(["faults", "list", "i-1"]).admin is False
