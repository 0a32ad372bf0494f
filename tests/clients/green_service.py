"""A service under eventlet's monkey patching that reports or reads faults, run as its own process.

    python tests/clients/green_service.py reporter TARGET INSTANCE_ID
    python tests/clients/green_service.py notifier CONFIG_FILE INSTANCE_ID
    python tests/clients/green_service.py reader TARGET INSTANCE_ID

It patches first, as OpenStack services do, then keeps a green thread
ticking while it reports faults through `SyncFaultReporter` (`reporter`) or
through the oslo.messaging notifier driver (`notifier`). Once its faults are
queued it prints "waiting": faultsvc is not up yet, and the test starts it
then. The reporter flushes and closes; the notifier's process just exits,
and the driver delivers at exit. Last it prints, as JSON, what it saw: how
long it waited for delivery, and the longest the ticking green thread was
held up meanwhile (a green thread blocked in a wait would hold it up for all
of that wait).

The `reader` reads the instance's latest fault through one
`SyncFaultServiceClient` from many green threads at once, as an API under
eventlet serves its requests, half of them as an admin; it prints the
details each kind of caller saw, how many calls were waiting at once at
most, and the longest the ticking green thread was held up.
"""

import eventlet  # type: ignore[import-untyped]

eventlet.monkey_patch()

import atexit  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import oslo_messaging  # type: ignore[import-untyped]  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_log import log  # noqa: E402

from faultsvc_client import (  # noqa: E402
    Backoff,
    FaultReporter,
    SyncFaultReporter,
    SyncFaultServiceClient,
)

TICK = 0.001
GREEN_READERS = 50
READS = 500
DELIVERY_TIMEOUT = 30.0
# A service that hangs says where, and ends before the test gives up on it.
HANG_TIMEOUT = 50.0


class Ticker:
    """A green thread that notes the longest time it was kept from running."""

    def __init__(self) -> None:
        self.longest_gap = 0.0
        self._last = time.monotonic()
        eventlet.spawn_n(self._tick)

    def _tick(self) -> None:
        while True:
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - self._last)
            self._last = now
            eventlet.sleep(TICK)


def failing_step(instance_id: str) -> None:
    raise RuntimeError(f"Guest of {instance_id} did not answer")


def run_reporter(target: str, instance_id: str) -> dict[str, Any]:
    ticker = Ticker()
    reporter = SyncFaultReporter(
        FaultReporter(
            target,
            source="conductor",
            host="cond-1",
            backoff=Backoff(initial=0.05, maximum=0.2),
            safe_exception_types=[RuntimeError],
        )
    )
    reporter.start()
    fault_ids = [reporter.report(instance_id, "Volume attach failed", "attach timed out")]
    try:
        failing_step(instance_id)
    except RuntimeError as error:
        fault_ids.append(reporter.report_exception(instance_id, error))
    try:
        with reporter.reporting(instance_id):
            raise ValueError("Resize failed")
    except ValueError:
        pass
    print("waiting", flush=True)

    started = time.monotonic()
    flushed = reporter.flush(timeout=DELIVERY_TIMEOUT)
    reporter.close(timeout=5)
    return {
        "flushed": flushed,
        "fault_ids": fault_ids,
        "stats": vars(reporter.stats),
        "waited": time.monotonic() - started,
        "held_longest": ticker.longest_gap,
    }


def run_notifier(config_file: str, instance_id: str) -> None:
    conf = cfg.ConfigOpts()
    log.register_options(conf)
    conf(args=[], project="taskmanager", default_config_files=[config_file])
    log.setup(conf, "taskmanager")
    transport = oslo_messaging.get_notification_transport(conf, url="fake:")
    notifier = oslo_messaging.Notifier(transport, publisher_id="taskmanager.tm-1")

    ticker = Ticker()
    exited: list[float] = []
    # Registered before the driver's close (at the first error), so it runs after it.
    atexit.register(lambda: print(json.dumps(exit_outcome(ticker, exited[0])), flush=True))
    notifier.info({}, "dbaas.instance_create.start", {"instance_id": instance_id})
    for step in ("Volume creation failed", "Guest prepare failed", "Backup failed"):
        notifier.error({}, "dbaas.instance.error", {"instance_id": instance_id, "message": step})
    print("waiting", flush=True)
    exited.append(time.monotonic())


def exit_outcome(ticker: Ticker, exited: float) -> dict[str, Any]:
    return {"waited": time.monotonic() - exited, "held_longest": ticker.longest_gap}


def run_reader(target: str, instance_id: str) -> dict[str, Any]:
    ticker = Ticker()
    in_flight = [0, 0]  # now, most at once: green threads switch only while they wait

    with SyncFaultServiceClient.connect(target) as client:

        def read(n: int) -> tuple[str, str]:
            caller = "admin" if n % 2 else "tenant"
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
            try:
                fault = client.get_latest_fault(
                    instance_id, roles=["admin"] if caller == "admin" else []
                )
            finally:
                in_flight[0] -= 1
            return caller, "<none>" if fault is None else fault.details

        seen: dict[str, set[str]] = {"admin": set(), "tenant": set()}
        for caller, details in eventlet.GreenPool(GREEN_READERS).imap(read, range(READS)):
            seen[caller].add(details)
    return {
        "details_seen": {caller: sorted(details) for caller, details in seen.items()},
        "most_at_once": in_flight[1],
        "held_longest": ticker.longest_gap,
    }


def main(kind: str, where: str, instance_id: str) -> None:
    faulthandler.dump_traceback_later(HANG_TIMEOUT, exit=True)
    if kind == "reporter":
        print(json.dumps(run_reporter(where, instance_id)), flush=True)
    elif kind == "reader":
        print(json.dumps(run_reader(where, instance_id)), flush=True)
    else:
        run_notifier(where, instance_id)


if __name__ == "__main__":
    main(*sys.argv[1:4])
