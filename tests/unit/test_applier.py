"""The Applier's bookkeeping when QEMU says no, with a scripted session (faults QEMU cannot be
made to produce on purpose: an undo that fails)."""

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import hotplug
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError

from .helpers import ScriptedQmp, disk, reconcile, running


def attach():
    layout = running(disks=[disk("a")])
    (action,) = reconcile(layout, disks=[disk("a"), disk("b")])
    return layout, action


def test_failed_attach_whose_undo_works_says_so_and_leaves_no_journal_entry():
    layout, action = attach()
    qmp = ScriptedQmp({"device_add": "Bus 'pci.0' not found"})
    applier = hotplug.Applier(qmp, layout, 5)
    with pytest.raises(QemuError, match=r"disks\[b\] .*failed, and what was added was removed"):
        applier.apply([action])
    assert [command for command, _arguments in qmp.sent] == ["blockdev-add", "device_add", "blockdev-del"]
    assert applier.unfinished == [] and [d["name"] for d in layout.devices] == ["a"]


def test_failed_attach_whose_undo_fails_says_so_and_keeps_the_journal_entry():
    layout, action = attach()
    qmp = ScriptedQmp({"device_add": "Bus 'pci.0' not found", "blockdev-del": "Node x is in use"})
    applier = hotplug.Applier(qmp, layout, 5)
    with pytest.raises(QemuError) as failure:
        applier.apply([action])
    assert "undoing it failed too" in str(failure.value) and "what was added was removed" not in str(failure.value)
    assert "Node x is in use" in str(failure.value)
    (entry,) = applier.unfinished
    assert entry.action == "attach" and entry.id == action.id and entry.record == action.record
