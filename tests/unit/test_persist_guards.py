"""Devices qemu_device attached survive a start; guards and hints of a live change (issue 22)."""

from dataclasses import asdict

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import args, migrate, plan, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils import spec as spec_mod
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.modules import qemu_blockdev, qemu_device, qemu_instance

from .helpers import disk, facts_for, params, place_with_spec


def running(**over):
    s, lay = place_with_spec(**over)
    return runtime.GuestLayout(
        name=s.name, uuid=s.uuid, machine_type=s.machine.machine_type, declaration=plan.normalise(s.to_dict()),
        controllers=[plan.normalise(c.to_dict()) for c in lay.controllers],
        devices=[dict(plan.normalise(d.to_dict()), state="attached", origin="blockdev", owner=plan.OWNER_INSTANCE)
                 for d in lay.devices])


def reconcile(data, owner=plan.OWNER_INSTANCE, **over):
    options = {k: over.pop(k) for k in ("persistent", "allow_boot_unplug") if k in over}
    s = spec_mod.instance_from(params(**over))
    return plan.reconcile(data, s, facts_for(s), owner=owner, **options)


# -- persistence -------------------------------------------------------------------------------


def test_a_stopped_layout_keeps_qemu_devices_disks_but_not_the_live_only_ones():
    layout = running(disks=[disk("root"), disk("b"), disk("c")], nics=[dict(name="n")])
    for record in layout.devices[1:]:
        record["owner"] = plan.OWNER_DEVICE
    layout.devices[2]["persistent"] = False  # c: attached live only
    declared = {"disks": [disk("root")], "nics": []}
    started = plan.kept_devices(layout, declared, running=False)
    assert [d["name"] for d in started["disks"]] == ["b"] and [n["name"] for n in started["nics"]] == ["n"]
    live = plan.kept_devices(layout, declared, running=True)
    assert [d["name"] for d in live["disks"]] == ["b", "c"]


def test_a_live_only_attach_is_marked_and_a_start_carries_owner_and_mark():
    (action,) = reconcile(running(disks=[disk("root")]), owner=plan.OWNER_DEVICE, persistent=False,
                          disks=[disk("root"), disk("b")])
    assert action.record["owner"] == plan.OWNER_DEVICE and action.record["persistent"] is False
    (kept,) = reconcile(running(disks=[disk("root")]), owner=plan.OWNER_DEVICE, disks=[disk("root"), disk("b")])
    assert "persistent" not in kept.record  # persistent, as every record written before the option
    assert plan.ownership(action.record) == {"owner": plan.OWNER_DEVICE, "persistent": False}
    assert plan.ownership(None) == {"owner": plan.OWNER_INSTANCE}


def test_a_migration_target_keeps_qemu_devices_records_with_owner_and_mark():
    layout = running(disks=[disk("root"), disk("b"), disk("c")])
    layout.devices[1]["owner"] = layout.devices[2]["owner"] = plan.OWNER_DEVICE
    layout.devices[2]["persistent"] = False
    bound = migrate.rebind(asdict(layout), {}, "/var/lib/t/vm1", "/usr/bin/qemu-system-x86_64")
    assert [(d["name"], plan.ownership(d)) for d in bound.devices] == [
        ("root", {"owner": plan.OWNER_INSTANCE}), ("b", {"owner": plan.OWNER_DEVICE}),
        ("c", {"owner": plan.OWNER_DEVICE, "persistent": False})]
    assert [d["name"] for d in bound.declaration["disks"]] == ["root", "b", "c"]


def test_qemu_device_refuses_a_persistence_it_cannot_give():
    layout = running(disks=[disk("root"), disk("b")])
    layout.devices[1]["persistent"] = False
    qemu_device.check_persistent(layout, "disk", disk("b"), "present", False)  # the same task again
    qemu_device.check_persistent(layout, "disk", disk("new"), "present", False)  # attached by this task
    with pytest.raises(ConfigError, match=r"disks\[b\] is attached live only .* remove it \(state: absent\)"):
        qemu_device.check_persistent(layout, "disk", disk("b"), "present", True)
    with pytest.raises(ConfigError, match=r"disks\[root\] is attached already and the next start brings it back"):
        qemu_device.check_persistent(layout, "disk", disk("root"), "present", False)
    with pytest.raises(ConfigError, match=r"persistent: false is for state: present"):
        qemu_device.check_persistent(layout, "disk", {"name": "b"}, "absent", False)


# -- why a device goes, and the device the guest boots from ------------------------------------


def test_the_reason_of_a_detach_says_what_asked_for_it():
    data = running(disks=[disk("root"), disk("b"), disk("c")])
    data.devices[2]["owner"] = plan.OWNER_DEVICE
    by_device = reconcile(data, owner=plan.OWNER_DEVICE, disks=[disk("root"), disk("c")])
    assert [(a.action, a.name, a.reason) for a in by_device] == [("detach", "b", "state: absent")]
    by_instance = reconcile(data, disks=[disk("root")])
    assert [(a.name, a.reason) for a in by_instance] == [("b", "not declared"),
                                                         ("c", "not declared (purge_undeclared)")]


def test_unplugging_the_boot_disk_needs_allow_boot_unplug():
    data = running(disks=[disk("root"), disk("b")])
    assert data.devices[0]["props"]["bootindex"] == 1
    with pytest.raises(ConfigError, match=r"disks\[root\] \(disk-[0-9a-f-]+\) is the device the guest boots from "
                                          r"\(bootindex 1\) and would be unplugged \(state: absent\).*"
                                          r"allow_boot_unplug: true"):
        reconcile(data, owner=plan.OWNER_DEVICE, disks=[disk("b")])
    (action,) = reconcile(data, allow_boot_unplug=True, disks=[disk("b")])
    assert (action.action, action.name) == ("detach", "root")
    # With a restart (allow_restart) nothing is unplugged: the new first disk is the boot disk.
    actions = reconcile(data, memory=512, disks=[disk("b")])
    assert [(a.action, a.name) for a in actions] == [("restart-required", "machine"), ("detach", "root")]


def test_the_boot_nic_is_guarded_and_a_kernel_boot_has_no_boot_device():
    with pytest.raises(ConfigError, match=r"nics\[n\] .* boots from"):
        reconcile(running(boot_order="network", nics=[dict(name="n"), dict(name="m")]), boot_order="network",
                  nics=[dict(name="m")])
    kernel = dict(kernel_path="/boot/vmlinuz")
    (action,) = reconcile(running(disks=[disk("root")], **kernel), disks=[], **kernel)
    assert (action.action, action.name) == ("detach", "root")


def test_a_scsi_hot_plug_onto_lsi_or_megasas_warns_and_names_virtio_scsi():
    for model, driver in (("lsi", "lsi53c895a"), ("megasas", "megasas")):
        actions = reconcile(running(disks=[disk("root")], scsi_controller_type=model), scsi_controller_type=model,
                            disks=[disk("root"), disk("s", disk_type="scsi-hd")])
        assert [a.name for a in actions] == ["scsi", "s"] and actions[0].warning == ""
        assert driver in actions[1].warning and "virtio-scsi-pci" in actions[1].warning
        assert "rescan" in actions[1].warning
    virtio = dict(scsi_controller_type="virtio-scsi-pci")
    quiet = reconcile(running(disks=[disk("root")], **virtio),
                      disks=[disk("root"), disk("s", disk_type="scsi-hd"), disk("v")], **virtio)
    assert [a.warning for a in quiet] == ["", "", ""]


# -- every path option is absolute -------------------------------------------------------------


@pytest.mark.parametrize("module, given, option", [
    (qemu_instance, dict(kernel_path="vmlinuz"), "kernel_path"),
    (qemu_instance, dict(initrd_path="initrd.gz"), "initrd_path"),
    (qemu_instance, dict(qemu_module_dir="lib/qemu"), "qemu_module_dir"),
    (qemu_instance, dict(qemu_firmware_dirs=["/usr/share/qemu", "fw"]), "qemu_firmware_dirs[1]"),
    (qemu_instance, dict(disks=[dict(name="a", path="a.raw")]), "disks[a].path"),
    (qemu_instance, dict(cdroms=[dict(name="cd", path="i.iso")]), "cdroms[cd].path"),
    (qemu_instance, dict(floppy=dict(name="floppy", path="f.img")), "floppy.path"),
    (qemu_instance, dict(adopt=dict(qmp_socket="q.sock")), "adopt.qmp_socket"),
    (qemu_instance, dict(adopt=dict(ganeti_runtime="web1.runtime")), "adopt.ganeti_runtime"),
    (qemu_blockdev, dict(snapshot=dict(path="snap.qcow2")), "snapshot.path"),
    (qemu_blockdev, dict(mirror=dict(path="copy.qcow2")), "mirror.path"),
    (qemu_blockdev, dict(commit=dict(top="top.qcow2")), "commit.top"),
    (qemu_blockdev, dict(commit=dict(base="base.qcow2")), "commit.base"),
    (qemu_blockdev, dict(stream=dict(base="base.qcow2")), "stream.base"),
    (qemu_blockdev, dict(path="node.qcow2"), "path"),
    (qemu_device, dict(state_dir="run/web1"), "state_dir"),
])
def test_a_relative_path_option_is_refused_naming_it(module, given, option):
    with pytest.raises(ConfigError, match=r"^%s: '[^']+' is a relative path; give an absolute path"
                       % option.replace("[", r"\[").replace("]", r"\]")):
        args.check_paths(module.ARGUMENT_SPEC, dict(dict(state_dir="/run/web1"), **given))
    absolute = {k: _absolute(v) for k, v in given.items()}
    args.check_paths(module.ARGUMENT_SPEC, dict(dict(state_dir="/run/web1"), **absolute))


def _absolute(value):
    if isinstance(value, str):
        return "/" + value
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return {k: _absolute(v) for k, v in value.items()}


def test_qemu_devices_device_paths_are_checked_by_kind():
    with pytest.raises(ConfigError, match=r"^device\.path: 'x\.raw' is a relative path"):
        qemu_device.declared_device("disk", dict(name="x", path="x.raw"), "present")
    with pytest.raises(ConfigError, match=r"^device\.path: 'r\.iso' is a relative path"):
        qemu_device.declared_device("cdrom", dict(name="cd", path="r.iso"), "present")
    assert qemu_device.declared_device("disk", dict(name="x", path="x.raw"), "absent") == {"name": "x"}
