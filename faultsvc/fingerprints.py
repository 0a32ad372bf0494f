"""Which faults are repeats of one another: the fingerprint of a fault.

Two faults of an instance with one fingerprint are one fault that happened
twice. The rule, as Sentry's grouping would have it:

- a caller's own fingerprint wins: the instance and that text;
- else, when the details hold a Python traceback: the instance, the source,
  and for each traceback of the chain (`raise ... from ...`, or an error
  while handling another) the code path, as each frame's file and function,
  and the exception type. Line numbers, source lines and values are left out,
  so an edit elsewhere in a file or another argument does not split a fault;
- else: the instance, the source and the message with what varies between
  repeats (numbers, UUIDs, hex strings and addresses) replaced by a
  placeholder.

The fingerprint is the SHA-256 of those parts, in hex: a fixed size whatever
the input, and a digest that says nothing about the text it was made of.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

FINGERPRINT_CHARS = 64  # SHA-256 in hex

# `  File "/srv/trove/manager.py", line 265, in prepare`; every pattern here is
# matched against one line at a time, so however long the details, the work is
# linear in their length.
_FRAME = re.compile(r' +File "([^"\n]*)", line \d+, in ([^\n]+)')
# The line that ends a traceback: `module.ErrorType: message`, or the bare type.
_EXCEPTION = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)(?::|$)")
# The installation's own directories: what comes before them differs between
# hosts (another virtualenv, another Python version) for the same code.
_INSTALL_DIRS = ("/site-packages/", "/dist-packages/")
_STDLIB_DIR = re.compile(r"/python3\.\d+/")
# Message words that vary between repeats of one error. The message is at most
# 255 characters when it is read here.
_VARYING = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUID
    r"|0[xX][0-9a-fA-F]+"  # address or hex literal
    r"|\b(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{8,}\b"  # a hex id, such as a request's or a commit's
    r"|\d+"  # numbers, ports, sizes, the parts of an IP address
)


def fingerprint_of(
    instance_id: str, source: str, message: str, details: str, caller_fingerprint: str = ""
) -> str:
    """The fingerprint of a fault, by the rule of this module.

    `message` is the message as stored (at most 255 characters); `details`
    may be long, and are read once, line by line.
    """
    if caller_fingerprint:
        return _digest(["caller", instance_id, caller_fingerprint])
    path = list(code_path(details))
    if path:
        return _digest(["traceback", instance_id, source, *path])
    return _digest(["message", instance_id, source, normalised_message(message)])


def code_path(details: str) -> Iterator[str]:
    """The frames (`file:function`) and exception types of the tracebacks in `details`.

    Empty when the details hold no traceback. A chain is read in the order
    Python prints it: the cause first.
    """
    in_frames = False
    for line in details.splitlines():
        frame = _FRAME.fullmatch(line)
        if frame is not None:
            in_frames = True
            yield f"{installed_path(frame.group(1))}:{frame.group(2)}"
        elif in_frames and not line.startswith(" "):
            # The first unindented line after the frames names the exception;
            # indented ones between are source lines and `^^^` markers.
            in_frames = False
            exception = _EXCEPTION.match(line)
            yield exception.group(1) if exception is not None else ""


def installed_path(path: str) -> str:
    """A source file's path from its installation's directory on: the same on every host."""
    for directory in _INSTALL_DIRS:
        start = path.rfind(directory)
        if start >= 0:
            return path[start + len(directory) :]
    stdlib = list(_STDLIB_DIR.finditer(path))
    return path[stdlib[-1].end() :] if stdlib else path


def normalised_message(message: str) -> str:
    """The message with what varies between repeats of one error replaced by `<*>`."""
    return _VARYING.sub("<*>", message)


def _digest(parts: Iterable[str]) -> str:
    # Each part prefixed with its length: no two lists of parts make one text.
    text = "".join(f"{len(part)}:{part}" for part in parts)
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()
