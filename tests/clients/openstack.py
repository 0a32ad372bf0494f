"""Error notifications sent the way Trove and Nova send them.

Each sender raises a real exception and builds its payload as the service's
own code does (trove/common/notification.py, nova/compute/utils.py,
nova/exception_wrapper.py, nova/scheduler/utils.py, and nova's versioned
notification objects), then sends it through a real `oslo_messaging.Notifier`
with the serializer that service uses: Trove's context serializer around
oslo.messaging's JsonPayloadSerializer, Nova's `to_primitive(convert_instances=True)`
with `str` as fallback. The exception classes stand in for the services' own,
in modules of the same names, so tracebacks print them as the services' do.
"""

from __future__ import annotations

import inspect
import json
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import oslo_messaging  # type: ignore[import-untyped]
from oslo_serialization import jsonutils

TROVE_HOST = "0.0.0.0"  # Trove's CONF.host by default
COMPUTE_HOST = "compute-01.example.org"
CONDUCTOR_HOST = "conductor-01.example.org"
# Internals that no tenant may read, in the text of exceptions that are not the services' own.
INTERNAL_ADDRESS = "10.20.30.40"


class TroveError(Exception):
    __module__ = "trove.common.exception"


class VolumeCreationFailure(TroveError):
    __module__ = "trove.common.exception"


class GuestError(TroveError):
    __module__ = "trove.common.exception"


class NovaException(Exception):
    """Nova's base exception, with its own repr(): a dict naming the class."""

    __module__ = "nova.exception"
    msg_fmt = "An unknown exception occurred."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = {"code": 500, **kwargs}
        self.message = message or self.msg_fmt % kwargs
        super().__init__(self.message)

    def format_message(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        fields = self.__dict__
        fields["class"] = type(self).__name__
        return str(fields)


class NoValidHost(NovaException):
    __module__ = "nova.exception"
    msg_fmt = "No valid host was found. %(reason)s"


class VolumeAttachFailed(NovaException):
    __module__ = "nova.exception"
    msg_fmt = "Volume %(volume_id)s could not be attached. Reason: %(reason)s"


class OperationalError(Exception):
    """A database driver's error: its text names the server."""

    __module__ = "pymysql.err"


def raised(error: BaseException) -> BaseException:
    """`error`, raised and caught, so that it carries a traceback (of this raise only)."""
    try:
        raise error.with_traceback(None)
    except BaseException as caught:
        return caught


def formatted_traceback(error: BaseException) -> list[str]:
    return traceback.format_exception(type(error), error, error.__traceback__)


# --- Trove -------------------------------------------------------------------


class TroveContextSerializer(oslo_messaging.Serializer):  # type: ignore[misc]
    """Trove's serializer for notifications: JsonPayloadSerializer, and the context as a dict."""

    def __init__(self) -> None:
        self._base = oslo_messaging.JsonPayloadSerializer()

    def serialize_entity(self, context: Any, entity: Any) -> Any:
        return self._base.serialize_entity(context, entity)

    def deserialize_entity(self, context: Any, entity: Any) -> Any:
        return entity

    def serialize_context(self, context: Any) -> Any:
        return dict(context)

    def deserialize_context(self, context: Any) -> Any:
        return context


def trove_notifier(transport: Any) -> Any:
    return oslo_messaging.Notifier(transport, serializer=TroveContextSerializer())


def trove_base_traits(server_type: str, request_id: str) -> dict[str, Any]:
    return {
        "tenant_id": "7a1f5bb2f1c64b7c9c7f1a52e1a2b6c1",
        "client_ip": "198.51.100.7",
        "server_ip": "trove-api.example.org",
        "server_type": server_type,
        "request_id": request_id,
    }


def send_trove_error(
    notifier: Any, action: str, payload: dict[str, Any], error: BaseException
) -> None:
    """DBaaSAPINotification.notify_exc_info: `message` and the traceback's lines, at INFO.

    The publisher is "<server_type>.<CONF.host>", as trove.rpc.get_notifier names it.
    """
    payload = {**payload, "message": str(error), "exception": formatted_traceback(error)}
    publisher = notifier.prepare(publisher_id=f"{payload['server_type']}.{TROVE_HOST}")
    publisher.info({"request_id": payload["request_id"]}, f"dbaas.{action}.error", payload)


def send_trove_taskmanager_error(notifier: Any, instance_id: str, error: BaseException) -> None:
    payload = {
        **trove_base_traits("taskmanager", "req-6c1d0b84-2f5e-4d4c-9f3c-1a4a1f1e2a11"),
        "instance_id": instance_id,
        "name": "db1",
        "flavor_id": "15",
        "datastore": "mysql",
        "datastore_version": "8.0",
    }
    send_trove_error(notifier, "instance_create", payload, raised(error))


def send_trove_guest_error(notifier: Any, instance_id: str, error: BaseException) -> None:
    """A guest agent's error, cast to the conductor (a JSON round trip), which notifies it."""
    caught = raised(error)
    cast = json.loads(
        json.dumps(
            {
                "serialized_notification": {
                    **trove_base_traits("guest", "req-0f3e2b7a-8c1d-4e59-b6a2-3d4c5e6f7a8b"),
                    "instance_id": instance_id,  # CONF.guest_id
                    "notification_classname": "trove.common.notification.DBaaSInstanceCreate",
                },
                "message": str(caught),
                "exception": formatted_traceback(caught),
            }
        )
    )
    payload = dict(cast["serialized_notification"])
    payload.pop("notification_classname")
    payload.update(message=cast["message"], exception=cast["exception"])
    publisher = notifier.prepare(publisher_id=f"{payload['server_type']}.{TROVE_HOST}")
    publisher.info({}, "dbaas.instance_create.error", payload)


def send_trove_non_errors(notifier: Any, instance_id: str) -> None:
    traits = trove_base_traits("api", "req-1")
    publisher = notifier.prepare(publisher_id=f"api.{TROVE_HOST}")
    publisher.info({}, "dbaas.instance_create.start", {**traits, "name": "db1"})
    publisher.info({}, "dbaas.instance_create.end", {**traits, "instance_id": instance_id})
    publisher.info({}, "trove.instance.create", {"instance_id": instance_id, "state": "active"})


# --- Nova --------------------------------------------------------------------


class NovaJsonPayloadSerializer(oslo_messaging.NoOpSerializer):  # type: ignore[misc]
    """nova.rpc.JsonPayloadSerializer, inside its RequestContextSerializer."""

    def serialize_entity(self, context: Any, entity: Any) -> Any:
        return jsonutils.to_primitive(entity, convert_instances=True, fallback=str)

    def serialize_context(self, context: Any) -> Any:
        return dict(context)


def nova_notifier(transport: Any) -> Any:
    return oslo_messaging.Notifier(transport, serializer=NovaJsonPayloadSerializer())


@dataclass
class Flavor:
    name: str = "m1.small"
    flavorid: str = "2"
    memory_mb: int = 2048


class Instance:
    """Enough of nova.objects.Instance: dict-like, as NovaObjectDictCompat makes it."""

    def __init__(self, uuid: str) -> None:
        self._fields = {
            "uuid": uuid,
            "host": COMPUTE_HOST,
            "display_name": "web-1",
            "flavor": Flavor(),
        }

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._fields.items())


def versioned(name: str, version: str, data: dict[str, Any]) -> dict[str, Any]:
    """obj_to_primitive() of a Nova notification payload."""
    return {
        "nova_object.name": name,
        "nova_object.namespace": "nova",
        "nova_object.version": version,
        "nova_object.data": data,
    }


def exception_payload(error: BaseException) -> dict[str, Any]:
    """ExceptionPayload.from_exception: the traceback's lines joined by commas."""
    tb = error.__traceback__
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = inspect.getmodule(tb.tb_frame)
    return versioned(
        "ExceptionPayload",
        "1.1",
        {
            "module_name": module.__name__ if module else "unknown",
            "function_name": tb.tb_frame.f_code.co_name,
            "exception": type(error).__name__,
            "exception_message": str(error),
            "traceback": ",".join(formatted_traceback(error)),
        },
    )


def send_nova_instance_action_error(
    notifier: Any, instance_id: str, action: str, error: BaseException
) -> None:
    """Versioned instance.<action>.error, an InstanceActionPayload with its `fault`."""
    payload = versioned(
        "InstanceActionPayload",
        "1.9",
        {
            "uuid": instance_id,
            "host": COMPUTE_HOST,
            "state": "error",
            "request_id": "req-5b2e8f0a-9d4c-4b1e-8a7f-6c3d2e1f0a9b",
            "fault": exception_payload(raised(error)),
        },
    )
    publisher = notifier.prepare(publisher_id=f"nova-compute:{COMPUTE_HOST}")
    publisher.error({}, f"instance.{action}.error", payload)


def send_nova_compute_task_error(notifier: Any, instance_id: str, error: BaseException) -> None:
    """Versioned compute_task.build_instances.error, a ComputeTaskPayload with its `reason`."""
    payload = versioned(
        "ComputeTaskPayload",
        "1.0",
        {
            "instance_uuid": instance_id,
            "request_spec": None,
            "state": "error",
            "reason": exception_payload(raised(error)),
        },
    )
    publisher = notifier.prepare(publisher_id=f"nova-conductor:{CONDUCTOR_HOST}")
    publisher.error({}, "compute_task.build_instances.error", payload)


def exception_to_dict(error: BaseException) -> dict[str, Any]:
    """nova.compute.utils.exception_to_dict: Nova's own message, else the class name."""
    format_message: Callable[[], str] | None = getattr(error, "format_message", None)
    message = format_message() if format_message else type(error).__name__
    return {"exception": error, "message": message[:255], "code": 500}


def send_nova_legacy_instance_error(
    notifier: Any, instance_id: str, action: str, error: BaseException
) -> None:
    """notify_about_instance_usage(..., fault=error): compute.instance.<action>.error."""
    payload = {
        "tenant_id": "7a1f5bb2f1c64b7c9c7f1a52e1a2b6c1",
        "instance_id": instance_id,
        "display_name": "web-1",
        "host": COMPUTE_HOST,
        "state": "error",
        **exception_to_dict(raised(error)),
    }
    publisher = notifier.prepare(publisher_id=f"compute.{COMPUTE_HOST}")
    publisher.error({}, f"compute.instance.{action}.error", payload)


def send_nova_wrapped_exception(
    notifier: Any, instance_id: str, method: str, error: BaseException
) -> None:
    """wrap_exception's legacy notification: the failed method's arguments, and the exception."""
    payload = {"exception": raised(error), "args": {"instance": Instance(instance_id)}}
    notifier.prepare(publisher_id=f"compute.{COMPUTE_HOST}").error({}, method, payload)


def send_nova_scheduling_error(notifier: Any, instance_id: str, error: BaseException) -> None:
    """scheduler_utils.set_vm_state_and_notify: compute_task.<method>, the exception as `reason`."""
    payload = {
        "request_spec": {"instance_properties": {"uuid": instance_id}},
        "instance_properties": {"uuid": instance_id},
        "instance_id": instance_id,
        "state": "error",
        "method": "build_instances",
        "reason": raised(error),
    }
    publisher = notifier.prepare(publisher_id=f"compute_task.{CONDUCTOR_HOST}")
    publisher.error({}, "compute_task.build_instances", payload)


def send_nova_non_errors(notifier: Any, instance_id: str) -> None:
    compute = notifier.prepare(publisher_id=f"nova-compute:{COMPUTE_HOST}")
    compute.info({}, "instance.create.start", versioned("InstanceCreatePayload", "1.12", {}))
    compute.info(
        {},
        "instance.create.end",
        versioned("InstanceCreatePayload", "1.12", {"uuid": instance_id, "fault": None}),
    )
    legacy = notifier.prepare(publisher_id=f"compute.{COMPUTE_HOST}")
    legacy.info({}, "compute.instance.update", {"instance_id": instance_id, "state": "active"})
    legacy.warn({}, "compute.instance.exists", {"instance_id": instance_id})
