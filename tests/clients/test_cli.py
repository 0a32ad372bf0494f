"""`faultsvc show` and `faultsvc faults list` run as people run them, against the real server."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from faultsvc.app import FaultServer
from faultsvc_client import FaultServiceClient
from faultsvc_client.cli import EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from tests.clients.processes import python_env, run_python_async
from tests.support.servers import free_port

CLI = ("-m", "faultsvc_client.cli")
TRACEBACK = """Traceback (most recent call last):
  File "/opt/trove/guestagent/manager.py", line 265, in prepare
    cluster_config, snapshot, modules)
  File "/opt/trove/guestagent/manager.py", line 355, in _prepare
    raise RuntimeError("A guest error occurred")
RuntimeError: A guest error occurred"""
FAULT_DATE = datetime(2026, 5, 6, 21, 30, 6, 250000, tzinfo=UTC)


async def record_guest_error(client: FaultServiceClient, instance: str) -> str:
    fault = await client.record_fault(
        instance,
        "A guest error occurred",
        details=TRACEBACK,
        source="guestagent",
        host="db-host-1",
        occur_time=FAULT_DATE,
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
    assert rows["fault_message"] == ["A guest error occurred"]
    assert rows["fault_details"] == TRACEBACK.splitlines()
    assert rows["fault_id"] == [fault_id]
    assert rows["instance_id"] == [instance]
    assert rows["source"] == ["guestagent"]
    assert rows["host"] == ["db-host-1"]
    assert list(rows) == sorted(rows), "properties are sorted, as trove show sorts them"
    assert shown.stderr == ""


async def test_show_hides_the_traceback_from_others(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    await record_guest_error(admin_client, instance)

    shown = await run_python_async([*CLI, "show", instance, "--target", server.target])

    assert shown.returncode == 0, shown.stderr
    rows = table_rows(shown.stdout)
    assert "fault_details" not in rows
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
    assert fault["create_time"] == "2026-05-06T21:30:06.250Z"
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
    assert admin_header == ["Date", "Fault ID", "Source", "Message", "Details"]
    assert [row[1] for row in admin_rows if row[1]] == ids[::-1]
    assert admin_rows[0] == ["2026-05-06T21:32:06", ids[2], "taskmanager", "error 2", "Traceback 2"]
    assert admin_rows[1] == ["", "", "", "", "line two"]

    user_header, *user_rows = table_lines(as_user.stdout)
    assert user_header == ["Date", "Fault ID", "Source", "Message"]
    assert [row[3] for row in user_rows] == ["error 2", "error 1", "error 0"]
    assert "Traceback" not in as_user.stdout


async def test_faults_list_pages_and_follows_every_page_with_all(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = str(uuid.uuid4())
    for n in range(5):
        await admin_client.record_fault(
            instance, f"error {n}", occur_time=FAULT_DATE + timedelta(seconds=n)
        )
    listing = [*CLI, "faults", "list", instance, "--target", server.target, "--page-size", "2"]

    first_page = await run_python_async(listing)
    everything = await run_python_async([*listing, "--all"])
    as_json = await run_python_async([*listing, "--all", "--json"])

    assert [row[3] for row in table_lines(first_page.stdout)[1:]] == ["error 4", "error 3"]
    assert "--all" in first_page.stderr
    assert [row[3] for row in table_lines(everything.stdout)[1:]] == [
        f"error {n}" for n in range(4, -1, -1)
    ]
    assert everything.stderr == ""
    listed = json.loads(as_json.stdout)
    assert [fault["message"] for fault in listed["faults"]] == [
        f"error {n}" for n in range(4, -1, -1)
    ]
    assert "next_page_token" not in listed


async def test_faults_list_says_when_there_are_none(server: FaultServer) -> None:
    instance = str(uuid.uuid4())

    listed = await run_python_async([*CLI, "faults", "list", instance, "--target", server.target])

    assert (listed.returncode, listed.stdout) == (0, f"Instance {instance} has no faults.\n")


async def test_faults_list_names_a_rejected_page_size(server: FaultServer) -> None:
    listed = await run_python_async(
        [*CLI, "faults", "list", "i-1", "--target", server.target, "--page-size", "-1"]
    )

    assert listed.returncode == EXIT_REFUSED
    assert listed.stderr.startswith("error: invalid argument: page_size: ")


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
