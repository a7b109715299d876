"""The QMP wire as the tests' own peers and relays read it, shared by tests/unit and
tests/integration (importable as ``qmp_wire``: pytest puts tests/ on sys.path)."""

import json

_DECODER = json.JSONDecoder()


def split_messages(pending):
    """The whole JSON messages at the start of ``pending`` (the text received so far), in order,
    and the incomplete rest to keep for the next chunk. A client such as qemu.qmp ends a command
    without a newline, so the stream is parsed, not split into lines."""
    messages = []
    while pending.strip():
        try:
            message, end = _DECODER.raw_decode(pending.lstrip())
        except ValueError:
            break  # an incomplete message: wait for the rest
        pending = pending.lstrip()[end:]
        messages.append(message)
    return messages, pending
