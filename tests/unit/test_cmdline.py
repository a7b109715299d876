import json

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import cmdline
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import RuntimePaths

from .helpers import disk, place, place_with_spec

PATHS = RuntimePaths("/run/vm,1")


def argv_of(**over):
    s, lay = place_with_spec(**over)
    return cmdline.build_argv(s, lay, "tcg", PATHS)


def values(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_never_drive_and_every_device_and_node_as_json():
    decl = dict(disks=[disk("a"), disk("b", disk_type="scsi-hd")], cdroms=[dict(name="c", path="/i.iso")])
    argv, lay = argv_of(**decl), place(**decl)
    assert "-drive" not in argv
    assert [json.loads(v) for v in values(argv, "-device")] == [d.props for d in lay.all_devices()]
    assert [json.loads(v) for v in values(argv, "-blockdev")] == [n for d in lay.devices for n in d.nodes]


def test_nodes_come_before_their_device():
    argv = argv_of(disks=[disk("a")])
    blockdevs = [i for i, a in enumerate(argv) if a == "-blockdev"]
    device = argv.index("-device")
    assert max(blockdevs) < device


def test_commas_in_paths_are_escaped_in_option_syntax():
    argv = argv_of()
    assert "socket,id=qmp,path=/run/vm,,1/qmp.sock,server=on,wait=off" in argv


def test_starts_paused_daemonized_with_a_pidfile():
    argv = argv_of()
    assert argv[-4:] == ["-pidfile", "/run/vm,1/qemu.pid", "-daemonize", "-S"]
    assert "-nodefaults" in argv and values(argv, "-accel") == ["tcg"]


def test_agent_channel_is_the_second_serial_port():
    argv = argv_of(agent_channel=True)
    assert values(argv, "-serial") == ["chardev:console", "chardev:agent"]
    assert "socket,id=agent,path=/run/vm,,1/agent.sock,server=on,wait=off" in argv


def test_direct_kernel_boot():
    argv = argv_of(kernel_path="/k", initrd_path="/i", kernel_args="console=ttyS0")
    assert values(argv, "-kernel") == ["/k"] and values(argv, "-initrd") == ["/i"]
    assert values(argv, "-append") == ["console=ttyS0"]


def test_firmware_dirs_become_dash_L():
    s, lay = place_with_spec()
    argv = cmdline.build_argv(s, lay, "kvm", PATHS, ["/p/share/qemu", "/p/share/seabios"])
    assert values(argv, "-L") == ["/p/share/qemu", "/p/share/seabios"]
    assert values(argv, "-cpu") == ["host"]


def test_a_declared_cpu_model_is_the_cpu_under_either_accelerator_and_a_bad_one_is_refused():
    s, lay = place_with_spec(cpu_model="Westmere,+ssse3,-x2apic")
    assert values(cmdline.build_argv(s, lay, "kvm", PATHS), "-cpu") == ["Westmere,+ssse3,-x2apic"]
    assert values(cmdline.build_argv(s, lay, "tcg", PATHS), "-cpu") == ["Westmere,+ssse3,-x2apic"]
    # A migration target passes the source's recorded CPU, whatever its own declaration says.
    assert values(cmdline.build_argv(s, lay, "tcg", PATHS, cpu="qemu64"), "-cpu") == ["qemu64"]
    with pytest.raises(ConfigError, match="cpu_model: 'Westmere -smp 8' is not a CPU model"):
        place_with_spec(cpu_model="Westmere -smp 8")
