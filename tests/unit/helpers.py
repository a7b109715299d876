"""Building declarations, layouts and runtime records for the pure core without a module run.
A unit test module imports from here, never from another test module."""

import json
import os

from ansible_collections.blocklayer.qemu.plugins.module_utils import layout, plan, runtime, spec
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
QCOW2 = layout.PathFacts("file", b"QFI\xfb")
RAW = layout.PathFacts("file", b"\0\0\0\0")


def params(**over):
    base = dict(name="vm1", state_dir="/run/vm1", uuid="11111111-2222-3333-4444-555555555555",
                qemu_binary="qemu-system-x86_64", disks=[], cdroms=[], floppy=None)
    base.update(over)
    return base


def disk(name, **over):
    d = dict(name=name, path="/img/%s.raw" % name)
    d.update(over)
    return d


def facts_for(instance_spec, facts=None):
    """Every declared path is a raw file unless ``facts`` says otherwise."""
    all_facts = {p: RAW for p in layout.declared_paths(instance_spec)}
    all_facts.update(facts or {})
    return all_facts


def place_with_spec(facts=None, **over):
    """Spec and layout of a declaration."""
    instance_spec = spec.instance_from(params(**over))
    return instance_spec, layout.layout_instance(instance_spec, facts_for(instance_spec, facts))


def place(facts=None, **over):
    return place_with_spec(facts, **over)[1]


def by_name(lay, name):
    return next(d for d in lay.all_devices() if d.name == name)


def running(facts=None, **over):
    """The guest layout of an instance started with this declaration, on images ``facts``
    describes (shared throttle groups included)."""
    s, lay = place_with_spec(facts, **over)
    return runtime.GuestLayout(
        name=s.name, uuid=s.uuid, machine_type=s.machine.machine_type, declaration=plan.normalise(s.to_dict()),
        controllers=[plan.normalise(c.to_dict()) for c in lay.controllers],
        devices=[dict(plan.normalise(d.to_dict()), state="attached", origin="blockdev") for d in lay.devices],
        throttle_groups=[plan.normalise(g) for g in lay.throttle_groups])


def reconcile(data, present_ids=None, live_pci_slots=(), **over):
    s = spec.instance_from(params(**over))
    return plan.reconcile(data, s, facts_for(s), live_pci_slots, present_ids)


def base_record(**over):
    """The record of qcow2 disk ``data``, attached by qemu_instance."""
    lay = place(facts={"/img/data.qcow2": QCOW2}, disks=[disk("data", path="/img/data.qcow2", format="qcow2", **over)])
    device = by_name(lay, "data")
    return dict(plan.normalise(device.to_dict()), state="attached", origin="blockdev", owner="qemu_instance")


def answers(style, version):
    """QEMU's QMP answers captured by hand for adoption (tests/data/qmp-adopt-*.json), without
    the qom-get answers QEMU refused."""
    with open(os.path.join(DATA, "qmp-adopt-%s-%s.json" % (style, version))) as handle:
        data = json.load(handle)
    data["qom-get"] = {dev: {k: v for k, v in props.items() if not (isinstance(v, dict) and "error" in v)}
                       for dev, props in data["qom-get"].items()}
    return data


def declared(**over):
    """The declaration matching the adopted QEMU of ``answers``."""
    base = dict(disks=[dict(name="root", path="/srv/images/hand/vda.qcow2", format="qcow2"),
                       dict(name="data", path="/srv/images/hand/sda.raw", disk_type="scsi-hd")],
                nics=[dict(name="lan", mac="52:54:00:12:34:56")], scsi_controller_type="virtio-scsi-pci")
    base.update(over)
    return spec.instance_from(params(**base))


class ScriptedQmp:
    """A QMP session that answers {} to everything except the commands in ``refuse`` (name ->
    QEMU's text), for faults QEMU cannot be made to produce on purpose (an undo that fails)."""

    def __init__(self, refuse=None):
        self.refuse = refuse or {}
        self.sent = []

    def execute(self, command, arguments=None, timeout=None):
        self.sent.append((command, arguments))
        if command in self.refuse:
            raise QemuError("QEMU refused %s: %s" % (command, self.refuse[command]), "GenericError",
                            self.refuse[command], command)
        return {}

    def execute_all(self, commands, timeout=None):
        return [self.execute(command, arguments, timeout) for command, arguments in commands]
