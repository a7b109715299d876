"""Building declarations for the pure core without a module run."""

from ansible_collections.blocklayer.qemu.plugins.module_utils import layout, spec
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError

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
