"""The guest's machine stays the guest's machine: the versioned machine type of an instance's
first start is on QEMU's command line at every later start, also by a newer QEMU, until the
declaration changes machine_type."""

import os
import signal

import pytest

from . import qemus
from .conftest import qemu_img, qemu_pids, run_module, Qmp

GENERATIONS = qemus.found()


@pytest.fixture
def instance(tmp_path):
    state_dir = str(tmp_path / "state")
    image = str(tmp_path / "a.raw")
    qemu_img("create", "-q", "-f", "raw", image, "16M")

    def run(binary, **over):
        args = dict(name="t", state_dir=state_dir, accel="tcg", qemu_binary=binary, shutdown_timeout=0,
                    disks=[dict(name="a", path=image)])
        args.update(over)
        result = run_module("qemu_instance", args)
        assert not result.get("failed"), result.get("msg")
        return result

    def machine_type():
        with Qmp(os.path.join(state_dir, "qmp.sock")) as qmp:
            return qmp("qom-get", path="/machine", property="type")

    yield run, machine_type
    for pid in qemu_pids(str(tmp_path)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(len(GENERATIONS) < 2, reason="needs two QEMU generations (make qemu-other)")
def test_a_newer_qemu_starts_the_guest_on_the_machine_of_its_first_start(instance):
    run, machine_type = instance
    (old_version, old), new = GENERATIONS[0], GENERATIONS[-1][1]
    first = run(old)
    pinned = machine_type()
    # QEMU names the machine's QOM type after the versioned machine (TYPE_MACHINE_SUFFIX).
    assert pinned == "pc-i440fx-%d.%d-machine" % old_version[:2]
    assert first["argv"][first["argv"].index("-machine") + 1] == "pc"  # a first start resolves the alias
    run(old, state="stopped")
    again = run(new)
    assert again["argv"][again["argv"].index("-machine") + 1] == pinned[:-len("-machine")]
    assert machine_type() == pinned
    # allow_restart with the same declaration on the newer QEMU: still the same machine.
    assert run(new)["changed"] is False
    # Another machine_type is another machine: the alias resolves anew (in the newer QEMU).
    q35 = run(new, machine_type="q35", allow_restart=True)
    assert q35["argv"][q35["argv"].index("-machine") + 1] == "q35"
    assert machine_type().startswith("pc-q35-") and machine_type() != "pc-q35-%d.%d-machine" % old_version[:2]
