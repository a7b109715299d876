import json
import socket
import threading

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import QmpSession, explain
from qmp_wire import split_messages


@pytest.mark.parametrize("desc,meaning", [
    ('Failed to get "write" lock', "in use by another process"),
    ('Failed to get shared "write" lock', "in use by another process that writes to it"),
    ("Device disk-a is already in the process of unplug", "has not yet released the device"),
    ("Bus 'ide.0' does not support hotplugging", "cannot hot-plug or hot-unplug"),
    ("Node disk-a.fmt is in use", "still uses it"),
    ("Unknown driver 'https'", "install qemu-block-extra"),
])
def test_known_qemu_texts_get_a_translation_after_the_original(desc, meaning):
    text = explain(desc)
    assert text.startswith(desc + " (") and meaning in text


def test_unknown_texts_pass_through_unchanged():
    assert explain("Property 'virtio-blk-device.drive' can't find value 'x'") == \
        "Property 'virtio-blk-device.drive' can't find value 'x'"


# -- the session's wire protocol, against a scripted peer (what QEMU cannot be made to do) --------
GREETING = {"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": []}}


class Peer:
    """A QMP server in a thread: greets, then hands every message it receives to ``answer``,
    which returns the byte strings to send (each sent on its own) or None to hang up."""

    def __init__(self, path, answer):
        self.answer = answer
        self.received = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _addr = self.server.accept()
        with conn:
            conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
            buf = ""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                messages, buf = split_messages(buf + chunk.decode())
                for message in messages:
                    self.received.append(message)
                    replies = self.answer(message)
                    if replies is None:
                        return
                    for data in replies:
                        conn.sendall(data)

    def close(self):
        self.server.close()
        self.thread.join(5)


def reply(message, **body):
    return (json.dumps(dict(body, id=message.get("id"))) + "\r\n").encode()


def event(name, **data):
    return (json.dumps({"event": name, "data": data, "timestamp": {"seconds": 0, "microseconds": 0}}) + "\r\n").encode()


@pytest.fixture
def peer(tmp_path):
    made = []

    def start(answer):
        made.append(Peer(str(tmp_path / "qmp.sock"), answer))
        return made[-1]
    yield start
    for p in made:
        p.close()


def scripted(message):
    """query-status answers after an unrelated event, its reply split in two sends; blockdev-del is refused."""
    if message["execute"] == "qmp_capabilities":
        return [reply(message, **{"return": {}})]
    if message["execute"] == "blockdev-del":
        return [reply(message, error={"class": "GenericError", "desc": "Failed to find node with node-name='x'"})]
    whole = reply(message, **{"return": {"status": "running", "running": True}})
    return [event("RTC_CHANGE", offset=0), whole[:10], whole[10:]]


def test_commands_over_the_plain_socket_skip_events_and_take_their_own_reply(peer, tmp_path):
    server = peer(scripted)
    with QmpSession(str(tmp_path / "qmp.sock"), 2, 2) as qmp:
        assert qmp.version == "10.0.2"
        assert qmp.execute("query-status")["status"] == "running"
        with pytest.raises(QemuError, match="QEMU refused blockdev-del: Failed to find node") as refused:
            qmp.execute("blockdev-del", {"node-name": "x"})
        assert refused.value.error_class == "GenericError" and refused.value.command == "blockdev-del"
        assert qmp.execute("query-status", {})["running"] is True
        # no listener, so qemu.qmp never carried the connection
        assert qmp._client is None  # pylint: disable=protected-access
    assert [m["execute"] for m in server.received] == ["qmp_capabilities", "query-status", "blockdev-del",
                                                       "query-status"]
    assert len({m["id"] for m in server.received}) == 4  # every command has an id of its own
    assert qmp.sent == [{"execute": "query-status", "arguments": {}},
                        {"execute": "blockdev-del", "arguments": {"node-name": "x"}},
                        {"execute": "query-status", "arguments": {}}]


def test_queries_sent_together_are_answered_in_one_round_trip_each_by_its_own_reply(peer, tmp_path):
    """execute_all writes every command before reading, so the peer sees them all before it
    answers one; the answers come back in the commands' order, a refusal raised after all."""
    pending = []

    def answer(message):
        if message["execute"] == "qmp_capabilities":
            return [reply(message, **{"return": {}})]
        pending.append(message)
        if len(pending) < 3:
            return []  # answers nothing until the third command arrived: a one-by-one client would hang
        out = [event("RTC_CHANGE", offset=0)]
        for m in reversed(pending):  # out of order: matched by id, not by position
            out.append(reply(m, error={"class": "GenericError", "desc": "no"}) if m["execute"] == "bad"
                       else reply(m, **{"return": m["execute"]}))
        pending.clear()
        return out
    server = peer(answer)
    with QmpSession(str(tmp_path / "qmp.sock"), 2, 2) as qmp:
        assert qmp.execute_all([("query-block", {}), ("query-pci", None), ("qom-list", {"path": "/"})]) == \
            ["query-block", "query-pci", "qom-list"]
        with pytest.raises(QemuError, match="QEMU refused bad: no"):
            qmp.execute_all([("query-block", {}), ("bad", {}), ("query-pci", {})])
        assert qmp.execute_all([("a", {}), ("b", {}), ("c", {})]) == ["a", "b", "c"]  # still in step
    assert [m["execute"] for m in server.received][1:4] == ["query-block", "query-pci", "qom-list"]
    assert [c["execute"] for c in qmp.sent][:3] == ["query-block", "query-pci", "qom-list"]


def test_the_first_listener_hands_the_connection_to_qemu_qmp_which_carries_commands_and_events(peer, tmp_path):
    def answer(message):
        if message["execute"] == "device_del":
            return [reply(message, **{"return": {}}), event("DEVICE_DELETED", device=message["arguments"]["id"])]
        return scripted(message)
    server = peer(answer)
    with QmpSession(str(tmp_path / "qmp.sock"), 2, 2) as qmp:
        qmp.execute("query-status")
        with qmp.listener("DEVICE_DELETED") as events:
            assert qmp.execute("device_del", {"id": "disk-a"}) == {}
            assert qmp.wait_event(events, 2)["data"] == {"device": "disk-a"}
            assert qmp.wait_event(events, 0) is None
        assert qmp.execute("query-status")["status"] == "running"
        with pytest.raises(QemuError, match="QEMU refused blockdev-del: Failed to find node"):
            qmp.execute("blockdev-del", {"node-name": "x"})
    assert [m["execute"] for m in server.received] == ["qmp_capabilities", "query-status", "device_del",
                                                       "query-status", "blockdev-del"]


def test_a_peer_that_hangs_up_mid_command_is_a_lost_connection(peer, tmp_path):
    peer(lambda message: scripted(message) if message["execute"] == "qmp_capabilities" else None)
    with QmpSession(str(tmp_path / "qmp.sock"), 2, 2) as qmp:
        with pytest.raises(QemuError, match="QMP connection lost during query-status"):
            qmp.execute("query-status")


def test_a_command_never_answered_times_out_naming_it(peer, tmp_path):
    peer(lambda message: scripted(message) if message["execute"] == "qmp_capabilities" else [])
    with QmpSession(str(tmp_path / "qmp.sock"), 2, 0.2) as qmp:
        with pytest.raises(QemuError, match=r"QEMU did not answer query-status within 0.2 s"):
            qmp.execute("query-status")
