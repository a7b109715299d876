"""DEVICE_UNPLUG_GUEST_ERROR, which QEMU on x86 cannot be made to send, from a fake QMP peer."""

import asyncio
import json
import os
import threading

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import hotplug, plan, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import QmpSession
from qmp_wire import split_messages

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}


class FakeQemu:
    """Answers every command with success; device_del is followed by a guest error event."""

    def __init__(self, path):
        self.path = path
        self.received = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_unix_server(self._client, self.path))
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, reader, writer):
        def send(obj):
            writer.write(json.dumps(obj).encode() + b"\r\n")
        send(GREETING)
        buf = ""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            messages, buf = split_messages(buf + chunk.decode())
            for msg in messages:
                self.received.append(msg)
                send({"return": {}, "id": msg.get("id")})
                if msg["execute"] == "device_del":
                    dev = msg["arguments"]["id"]
                    send({"event": "DEVICE_UNPLUG_GUEST_ERROR", "data": {"device": dev, "path": "/machine/peripheral/" + dev},
                          "timestamp": {"seconds": 0, "microseconds": 0}})
            await writer.drain()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_guest_refusing_an_unplug_fails_naming_the_device_and_keeps_it(tmp_path):
    record = {"kind": "disk", "name": "a", "id": "disk-a", "state": "attached", "origin": "blockdev",
              "hvinfo": {"driver": "virtio-blk-pci", "id": "disk-a"}, "props": {},
              "nodes": [{"node-name": "disk-a.stor"}, {"node-name": "disk-a.fmt"}]}
    layout = runtime.GuestLayout("t", "u", "pc", {}, [], [dict(record)])
    action = plan.Action(plan.DETACH, "disk", "a", "disk-a", old=record)
    with FakeQemu(os.path.join(str(tmp_path), "qmp.sock")) as fake:
        with QmpSession(fake.path, 2, 2) as qmp:
            applier = hotplug.Applier(qmp, layout, unplug_timeout=5)
            with pytest.raises(QemuError, match=r"disks\[a\] \(disk-a\): the guest refused to release it"):
                applier.detach([action])
    assert [m["execute"] for m in fake.received] == ["qmp_capabilities", "device_del"]  # no blockdev-del
    assert layout.devices == [record]  # the device stays recorded as it was
