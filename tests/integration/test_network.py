"""NICs on a running tiny guest: a removal that completes reaches netdev_del, for user, tap
and bridge netdevs.

A NIC is a PCI device: its unplug completes only when the guest answers the ACPI request,
so every test here boots the guest. Tap and bridge tests create their own host interfaces
(unique names, removed at teardown even on failure).
"""

import fcntl
import json
import os
import secrets
import subprocess
import tempfile

import pytest

from .conftest import BOOT, GUEST_MARKS, GuestAgent, info_network

pytestmark = GUEST_MARKS
BRIDGE_CONF = "/etc/qemu/bridge.conf"  # read by qemu-bridge-helper, QEMU 7.2's and 10.0's alike
BRIDGE_HELPER = "/usr/lib/qemu/qemu-bridge-helper"  # the default helper of both binaries
# Every checkout and xdist worker on this machine takes this lock to touch BRIDGE_CONF.
BRIDGE_LOCK = os.path.join(tempfile.gettempdir(), "blocklayer-qemu-bridge-conf.lock")


@pytest.fixture
def guest(vm):
    """The vm fixture, booting the tiny guest with its agent; ``vm.agent()`` waits for READY."""
    def run(**over):
        args = dict(BOOT, unplug_timeout=60)
        args.update(over)
        result = vm.run(**args)
        assert not result.get("failed"), result.get("msg")
        return result

    def agent():
        ga = GuestAgent(os.path.join(vm.state_dir, "agent.sock"), timeout=90)
        ga.wait_ready()
        return ga

    vm.guest_run, vm.agent = run, agent
    return vm


def ip(*args):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=False)


@pytest.fixture
def tap():
    """A persistent tap interface of its own, deleted at teardown."""
    name = "blqt" + secrets.token_hex(3)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun")
    made = ip("tuntap", "add", "dev", name, "mode", "tap")
    if made.returncode:
        pytest.skip("cannot create a tap here: %s" % made.stderr.strip())
    try:
        yield name
    finally:
        ip("link", "del", name)


def _conf_allows(name):
    with open(BRIDGE_CONF, encoding="utf-8", errors="replace") as handle:
        rules = [line.split() for line in handle]
    return ["allow", "all"] in rules or ["allow", name] in rules


@pytest.fixture
def bridge():
    """A bridge of its own that qemu-bridge-helper may use, removed at teardown.

    bridge.conf is created only when absent (and removed afterwards, with /etc/qemu if the
    fixture made it); an existing one is never changed: the test is skipped unless it already
    allows the bridge.
    """
    name = "blqb" + secrets.token_hex(3)
    if not os.path.exists(BRIDGE_HELPER) or not os.path.exists("/dev/net/tun"):
        pytest.skip("no %s or /dev/net/tun" % BRIDGE_HELPER)
    with open(BRIDGE_LOCK, "a", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made_dir = made_conf = made_bridge = False
        try:
            if os.path.lexists(BRIDGE_CONF):
                if not _conf_allows(name):
                    pytest.skip("%s exists and does not allow %s; it is left alone" % (BRIDGE_CONF, name))
            else:
                if not os.path.isdir(os.path.dirname(BRIDGE_CONF)):
                    os.mkdir(os.path.dirname(BRIDGE_CONF), 0o755)
                    made_dir = True
                with open(BRIDGE_CONF, "x", encoding="ascii") as handle:
                    made_conf = True
                    handle.write("allow %s\n" % name)
            made = ip("link", "add", name, "type", "bridge")
            if made.returncode:
                pytest.skip("cannot create a bridge here: %s" % made.stderr.strip())
            made_bridge = True
            yield name
        finally:
            if made_bridge:
                ip("link", "del", name)
            if made_conf:
                os.unlink(BRIDGE_CONF)
            if made_dir:
                os.rmdir(os.path.dirname(BRIDGE_CONF))


def taps_held(pid):
    """Names of the tap interfaces whose /dev/net/tun fds the process holds (fdinfo ``iff:``)."""
    held = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "/dev/net/tun":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as handle:
                held |= {line.split()[1] for line in handle if line.startswith("iff:")}
        except OSError:
            continue
    return held


def guest_nics(agent):
    """MAC -> interface name, from the guest's /sys/class/net."""
    out = agent.run('for i in /sys/class/net/*; do echo "${i##*/} $(cat $i/address)"; done')
    return {mac: name for name, mac in (line.split() for line in out.splitlines()) if name != "lo"}


def runtime_nic(result, name, netdev_type):
    """The runtime record of NIC ``name``, read from the runtime file the result names."""
    with open(result["runtime_file"]) as handle:
        return next(d for d in json.load(handle)["layout"]["devices"] if d["kind"] == "nic" and d["name"] == name
                    and d["netdev"]["type"] == netdev_type)


def netdev_dels(result):
    return [c["arguments"]["id"] for c in result["qmp_commands"] if c["execute"] == "netdev_del"]


def test_nic_removed_from_a_running_guest_reaches_netdev_del_and_leaves_the_guest(guest):
    started = guest.guest_run(nics=[dict(name="n1"), dict(name="n2")])
    n1, n2 = runtime_nic(started, "n1", "user"), runtime_nic(started, "n2", "user")
    with guest.agent() as ga:
        seen = guest_nics(ga)
        assert {n1["props"]["mac"], n2["props"]["mac"]} <= set(seen), seen
        with guest.qmp() as qmp:
            assert n2["netdev"]["id"] in info_network(qmp)
        removed = guest.guest_run(nics=[dict(name="n1")])
        assert [(a["action"], a["name"]) for a in removed["actions"]] == [("detach", "n2")]
        assert removed["unplug_pending"] == [] and netdev_dels(removed) == [n2["netdev"]["id"]]
        with guest.qmp() as qmp:
            network = info_network(qmp)
        assert n2["id"] not in network and n2["netdev"]["id"] not in network, network
        assert n1["netdev"]["id"] in network
        seen = guest_nics(ga)
        assert n2["props"]["mac"] not in seen and n1["props"]["mac"] in seen, seen


def test_tap_nic_attached_live_opens_the_tap_and_its_removal_releases_it(guest, tap):
    started = guest.guest_run()
    pid = started["pid"]
    with guest.agent():  # the guest is up, so it will answer the unplug
        assert taps_held(pid) == set()
        added = guest.guest_run(nics=[dict(name="t", netdev="tap", ifname=tap)])
        nic = runtime_nic(added, "t", "tap")
        assert taps_held(pid) == {tap}  # QEMU opened the tap at netdev_add
        with guest.qmp() as qmp:
            assert "ifname=%s" % tap in info_network(qmp)[nic["netdev"]["id"]]
        removed = guest.guest_run()
        assert removed["unplug_pending"] == [] and netdev_dels(removed) == [nic["netdev"]["id"]]
        assert taps_held(pid) == set()
        with guest.qmp() as qmp:
            assert nic["netdev"]["id"] not in info_network(qmp)


def test_bridge_nic_attached_live_joins_the_bridge_and_its_removal_leaves_it(guest, bridge):
    ports = os.path.join("/sys/class/net", bridge, "brif")
    started = guest.guest_run()
    pid = started["pid"]
    with guest.agent():
        added = guest.guest_run(nics=[dict(name="b", netdev="bridge", bridge=bridge)])
        nic = runtime_nic(added, "b", "bridge")
        (port,) = os.listdir(ports)  # the tap qemu-bridge-helper made and put on the bridge
        assert taps_held(pid) == {port}
        with guest.qmp() as qmp:
            assert "br=%s" % bridge in info_network(qmp)[nic["netdev"]["id"]]
        removed = guest.guest_run()
        assert removed["unplug_pending"] == [] and netdev_dels(removed) == [nic["netdev"]["id"]]
        assert taps_held(pid) == set() and os.listdir(ports) == []
        with guest.qmp() as qmp:
            assert nic["netdev"]["id"] not in info_network(qmp)
