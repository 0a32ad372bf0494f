"""The `faultsvc` oslo.messaging notifier driver: error notifications become faults.

Enable it beside the service's other notification drivers (`driver` is a
multi-valued option: one line per driver):

    [oslo_messaging_notifications]
    driver = messagingv2
    driver = faultsvc

    [faultsvc]
    target = faultsvc.example:50051
    safe_exception_types = nova.exception, trove.common.exception

Every notification of priority ERROR or CRITICAL, or whose event type ends
in `.error`, that names an instance is recorded as the instance's fault
(see `faultsvc_client.notifications` for the payloads understood), with
the notifier's publisher_id ("taskmanager.host1", "nova-compute:host1") as
its source and host; the others are ignored at the cost of one comparison.
An exception's text is shown in the fault's message only if its type is
declared in `safe_exception_types`; otherwise its class name is, and the
text goes to the admin-only details. Faults go through a
`SyncFaultReporter`, so a notification never waits for faultsvc, and one
sent while faultsvc is down is delivered when it is back.

Needs oslo.messaging (the `oslo` extra); `faultsvc_client.notifications`
has the same callback for services without it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from oslo_config import cfg
from oslo_messaging.notify import notifier  # type: ignore[import-untyped]

from faultsvc_client.client import DEFAULT_TARGET, TlsConfig
from faultsvc_client.notifications import is_error_notification, record_error_notification
from faultsvc_client.reporter import FaultReporter
from faultsvc_client.sync_reporter import SyncFaultReporter

__all__ = ["FaultNotifierDriver", "list_opts", "record_error_notification", "register_opts"]

LOG = logging.getLogger(__name__)

GROUP = "faultsvc"

OPTS = [
    cfg.StrOpt(
        "target",
        help=f"faultsvc's address, HOST:PORT. Unset: $FAULTSVC_TARGET, else {DEFAULT_TARGET}.",
    ),
    cfg.StrOpt(
        "token",
        secret=True,
        help="Bearer token, when faultsvc requires one. Unset: $FAULTSVC_TOKEN.",
    ),
    cfg.StrOpt("ca_file", help="CA certificates to verify faultsvc with; turns TLS on."),
    cfg.StrOpt("cert_file", help="Client certificate, for mutual TLS."),
    cfg.StrOpt("key_file", help="Client private key, for mutual TLS."),
    cfg.StrOpt(
        "source",
        help="The component named in faults whose notification has no publisher_id. "
        "Unset: the process name.",
    ),
    cfg.ListOpt(
        "safe_exception_types",
        default=[],
        help="Exceptions whose text tenants may read in a fault's message: qualified "
        "class names or modules, as in nova.exception, trove.common.exception. Any other "
        "exception is shown by its class name, its text in the admin-only details.",
    ),
    cfg.IntOpt(
        "queue_size",
        default=1000,
        min=1,
        help="Faults kept while faultsvc is unreachable; beyond, the oldest are dropped.",
    ),
    cfg.FloatOpt(
        "shutdown_timeout",
        default=5.0,
        min=0,
        help="Seconds to spend delivering queued faults when the process exits.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """For oslo-config-generator."""
    return [(GROUP, OPTS)]


def reporter_from_config(conf: cfg.ConfigOpts) -> SyncFaultReporter:
    options = conf[GROUP]
    tls = None
    if options.ca_file or options.cert_file or options.key_file:
        tls = TlsConfig.from_files(options.ca_file, options.cert_file, options.key_file)
    reporter = FaultReporter(
        options.target or os.environ.get("FAULTSVC_TARGET") or DEFAULT_TARGET,
        token=options.token or os.environ.get("FAULTSVC_TOKEN"),
        tls=tls,
        source=options.source,
        max_queue_size=options.queue_size,
        safe_exception_types=options.safe_exception_types,
    )
    return SyncFaultReporter(reporter)


class FaultNotifierDriver(notifier.Driver):  # type: ignore[misc]
    """Records error notifications as faults; entry point `faultsvc`."""

    def __init__(self, conf: cfg.ConfigOpts, topics: list[str], transport: Any) -> None:
        super().__init__(conf, topics, transport)
        register_opts(conf)
        self._reporter = reporter_from_config(conf)
        self._shutdown_timeout: float = conf[GROUP].shutdown_timeout
        self._start_lock = threading.Lock()
        self._started = False

    def notify(self, ctxt: Any, message: dict[str, Any], priority: str, retry: Any) -> None:
        event_type = message.get("event_type", "")
        if not is_error_notification(event_type, priority):
            return
        try:
            # Started on the first error, so that a service that never fails
            # never runs the reporter's thread.
            self._start_once()
        except Exception:
            LOG.exception("could not start the fault reporter; %s not recorded", event_type)
            return
        record_error_notification(
            self._reporter,
            event_type,
            message.get("payload"),
            priority,
            publisher_id=message.get("publisher_id"),
            context=ctxt,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until the faults of earlier notifications are delivered."""
        return self._reporter.flush(timeout)

    def close(self) -> None:
        """Delivers what it can within `shutdown_timeout`, then stops the reporter."""
        self._reporter.close(self._shutdown_timeout)

    def _start_once(self) -> None:
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self._reporter.start()
            # oslo.messaging never tells a driver that it is done with it.
            atexit.register(self.close)
            self._started = True
