"""The fingerprint rule, on real Python tracebacks: what makes two faults one."""

from __future__ import annotations

import time
import traceback

import pytest

from faultsvc.fingerprints import code_path, fingerprint_of, installed_path, normalised_message


class VolumeError(Exception):
    pass


def attach_volume(size: int) -> None:
    raise VolumeError(f"volume of {size} GB is not available")


def resize(size: int) -> None:
    attach_volume(size)


def resize_elsewhere(size: int) -> None:
    attach_volume(size)


def prepare(size: int) -> None:
    try:
        resize(size)
    except VolumeError as error:
        raise RuntimeError("prepare failed") from error


def prepare_while_handling(size: int) -> None:
    try:
        resize(size)
    except VolumeError:
        raise RuntimeError("prepare failed")  # noqa: B904 (the implicit chain is the test)


def prepare_with_another_cause(size: int) -> None:
    try:
        int("not a size")
    except ValueError as error:
        raise RuntimeError("prepare failed") from error


def traceback_of(function: object, *args: object) -> str:
    try:
        function(*args)  # type: ignore[operator]
    except Exception:
        return traceback.format_exc()
    raise AssertionError("no exception")


def fingerprint(details: str, message: str = "boom", source: str = "taskmanager") -> str:
    return fingerprint_of("i-1", source, message, details)


def test_repeats_of_one_error_with_other_values_and_messages_are_one_fault() -> None:
    first = traceback_of(resize, 10)
    second = traceback_of(resize, 20)
    assert first != second  # the values differ in the text
    assert fingerprint(first, "volume of 10 GB") == fingerprint(second, "another message")


def test_line_numbers_and_source_lines_do_not_split_a_fault() -> None:
    details = traceback_of(resize, 10)
    edited = details.replace(", line ", ", line 1").replace("attach_volume(size)", "x")
    assert edited != details
    assert fingerprint(edited) == fingerprint(details)


def test_another_code_path_is_another_fault() -> None:
    assert fingerprint(traceback_of(resize, 10)) != fingerprint(traceback_of(resize_elsewhere, 10))


def test_another_exception_type_is_another_fault() -> None:
    details = traceback_of(resize, 10)
    assert fingerprint(details) != fingerprint(details.replace("VolumeError", "OtherError"))


def test_another_instance_or_source_is_another_fault() -> None:
    details = traceback_of(resize, 10)
    assert fingerprint(details) != fingerprint(details, source="conductor")
    assert fingerprint_of("i-1", "s", "m", details) != fingerprint_of("i-2", "s", "m", details)


def test_a_chained_traceback_counts_its_cause() -> None:
    """`raise ... from ...` and an error while handling another: every link is the path."""
    caused = traceback_of(prepare, 10)
    assert "direct cause" in caused
    functions = [step.rpartition(":")[2] for step in code_path(caused)]
    assert functions == [
        *("prepare", "resize", "attach_volume", f"{__name__}.VolumeError"),
        *("traceback_of", "prepare", "RuntimeError"),
    ]
    assert fingerprint(caused) == fingerprint(traceback_of(prepare, 20))
    assert fingerprint(caused) != fingerprint(traceback_of(prepare_with_another_cause, 10))
    handling = traceback_of(prepare_while_handling, 10)
    assert "During handling" in handling
    assert fingerprint(handling) == fingerprint(traceback_of(prepare_while_handling, 30))


def test_the_code_path_is_the_same_on_every_host() -> None:
    details = traceback_of(resize, 10)
    here = details.replace('File "/', 'File "/srv/venv/lib/python3.11/site-packages/')
    there = details.replace('File "/', 'File "/opt/other/lib/python3.12/site-packages/')
    assert fingerprint(here) == fingerprint(there)
    assert installed_path("/usr/lib/python3.12/asyncio/tasks.py") == "asyncio/tasks.py"
    assert installed_path("/usr/lib/python3/dist-packages/trove/x.py") == "trove/x.py"
    assert installed_path("/srv/trove/x.py") == "/srv/trove/x.py"


@pytest.mark.parametrize(
    ("message", "normalised"),
    [
        ("Volume 1234 of 20 GB failed", "Volume <*> of <*> GB failed"),
        ("Instance 73cfc462-dd59-4dc1-9d32-95954171775f not found", "Instance <*> not found"),
        ("object at 0x7f3a2c1b9d60 is gone", "object at <*> is gone"),
        ("request deadbeef12 failed", "request <*> failed"),
        ("connect to 10.0.0.7:3306 refused", "connect to <*>.<*>.<*>.<*>:<*> refused"),
        ("Disk full on /dev/vdb", "Disk full on /dev/vdb"),
    ],
)
def test_without_a_traceback_the_message_counts_without_what_varies(
    message: str, normalised: str
) -> None:
    assert normalised_message(message) == normalised
    assert fingerprint("", message) == fingerprint("no traceback here", normalised)


def test_a_message_is_no_traceback_and_a_traceback_is_no_message() -> None:
    details = traceback_of(resize, 10)
    assert fingerprint(details, "a") == fingerprint(details, "b")
    assert fingerprint("", "a") != fingerprint("", "b")


def test_a_callers_fingerprint_groups_whatever_the_text() -> None:
    one = fingerprint_of("i-1", "a", "m1", traceback_of(resize, 1), "volume-attach")
    two = fingerprint_of("i-1", "b", "m2", "", "volume-attach")
    assert one == two
    assert one != fingerprint_of("i-1", "a", "m1", "", "volume-detach")
    assert len(one) == 64


def seconds_per_kib(details: str, runs: int) -> float:
    fastest = float("inf")
    for _ in range(runs):
        started = time.thread_time()
        fingerprint_of("i-1", "s", "m", details)
        fastest = min(fastest, time.thread_time() - started)
    return fastest / (len(details) / 1024)


@pytest.mark.parametrize(
    "unit",
    [
        '  File "',  # a frame that never closes
        '  File "/python3.1/python3.11/site-packages',  # install directories without end
        '  File "a", line 1, in f\n',  # frames only
        '  File "a", line 1, in f\nE' + "." * 30,  # a frame, then a long exception line
        "0" * 64,
    ],
)
def test_hostile_details_cost_linear_time(unit: str) -> None:
    """16 times the details cost 16 times the time: no pattern rescans the rest of the text."""

    def repeated(size: int) -> str:
        return (unit * (size // len(unit) + 1))[:size]

    small = seconds_per_kib(repeated(8 * 1024), runs=3)
    large = seconds_per_kib(repeated(128 * 1024), runs=2)
    assert large < max(4 * small, 50e-6), f"{small * 1e6:.0f} then {large * 1e6:.0f} us/KiB"
