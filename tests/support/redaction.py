"""Finding admin-only values in messages, independently of the server's own code."""

from __future__ import annotations

from google.protobuf.message import Message

from faultsvc.v1 import options_pb2


def admin_only_values(message: Message, path: str = "") -> list[str]:
    """The paths of every admin-only field that is set, anywhere in `message`."""
    found = []
    for field, value in message.ListFields():
        here = f"{path}.{field.name}" if path else field.name
        if field.GetOptions().Extensions[options_pb2.admin_only]:
            found.append(here)
        elif field.message_type is not None:
            children = (
                value.values()
                if field.message_type.GetOptions().map_entry
                else (value if field.is_repeated else [value])
            )
            for index, child in enumerate(children):
                if isinstance(child, Message):
                    found += admin_only_values(child, f"{here}[{index}]")
    return found
