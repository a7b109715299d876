"""state: stopped on a running guest: the powerdown path and the timeout path.

The tiny Linux guest (build/guest) cannot take this part: its kernel has no ACPI button
driver (``/sys/firmware/acpi/interrupts/ff_pwr_btn`` reads "invalid"), so it ignores the power
button like any guest without an ACPI daemon. The guest here is the test's own multiboot
kernel (conftest.GuestCode): when told to on its second serial port, it enables the power
button event, and when the button is pressed it says so on its console and powers off through
ACPI (S5), as an ACPI-aware OS does. It boots in well under a second under TCG.
"""

import os
import socket
import time

import pytest

from .conftest import GuestCode, alive

PM1A_STS, PM1A_EN, PM1A_CNT = 0x600, 0x602, 0x604
PWRBTN = 0x0100  # PWRBTN_STS in PM1a_STS, PWRBTN_EN in PM1a_EN
SLP_EN = 0x2000  # with SLP_TYP 0: soft off (S5) on QEMU's PIIX4 PM
COM1, COM2 = 0x3F8, 0x2F8
PRESSED = "guest: power button pressed, powering off"


def acpi_guest():
    """Waits for a byte on COM2, enables the power button, says ARMED on COM2, then waits for
    the button: says so on COM1 and writes S5 to PM1a_CNT. Without the byte it never enables
    the event, so QEMU's power button does nothing to it (a guest that ignores ACPI)."""
    code = GuestCode()
    code.wait_bits(COM2 + 5, 0x01)  # LSR data ready
    code.inb(COM2)
    code.outw(PM1A_EN, PWRBTN)
    code.puts(COM2, "ARMED\n")
    code.wait_bits(PM1A_STS, PWRBTN, word=True)
    code.puts(COM1, PRESSED + "\n")
    code.outw(PM1A_CNT, SLP_EN)
    code.halt()
    return code.kernel()


@pytest.fixture
def running_guest(vm):
    kernel = vm.images / "acpi-guest.bin"
    kernel.write_bytes(acpi_guest())
    started = vm.run(kernel_path=str(kernel), agent_channel=True)
    assert started["changed"] and not started.get("failed"), started.get("msg")
    with vm.qmp() as qmp:
        assert qmp("query-status")["status"] == "running"
    vm.pid = started["pid"]
    vm.console = os.path.join(vm.state_dir, "console.log")
    return vm


def arm(vm):
    """Tell the guest to answer the power button; return once it has enabled the event."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as chan:
        chan.settimeout(60)
        chan.connect(os.path.join(vm.state_dir, "agent.sock"))
        chan.sendall(b"g")
        seen = b""
        while b"ARMED\n" not in seen:
            data = chan.recv(64)
            assert data, "the guest's serial socket closed before it armed"
            seen += data


def console(vm):
    with open(vm.console, encoding="ascii", errors="replace") as handle:
        return handle.read()


def test_stop_powers_down_a_guest_that_answers_the_power_button(running_guest):
    vm = running_guest
    arm(vm)
    timeout = 120
    began = time.monotonic()
    result = vm.run(state="stopped", shutdown_timeout=timeout)
    took = time.monotonic() - began
    assert result["changed"] and not result.get("failed"), result.get("msg")
    (stop,) = [a for a in result["actions"] if a["action"] == "stop"]
    assert stop["how"] == "powerdown"
    sent = [c["execute"] for c in result["qmp_commands"]]
    assert "system_powerdown" in sent and "quit" not in sent
    # Independent of what the module says: the guest saw the button and powered itself off,
    # the process is gone, and the run ended long before the timeout a quit would follow.
    assert PRESSED in console(vm)
    assert not alive(vm.pid) and vm.pids() == []
    assert took < timeout / 4, "stop took %.1f s of a %d s shutdown_timeout" % (took, timeout)


def test_stop_quits_after_shutdown_timeout_when_the_guest_ignores_the_power_button(running_guest):
    vm = running_guest  # not armed: the guest runs, but never enables the power button event
    timeout = 2.0
    began = time.monotonic()
    result = vm.run(state="stopped", shutdown_timeout=timeout)
    took = time.monotonic() - began
    assert result["changed"] and not result.get("failed"), result.get("msg")
    (stop,) = [a for a in result["actions"] if a["action"] == "stop"]
    assert stop["how"] == "quit"
    sent = [c["execute"] for c in result["qmp_commands"]]
    assert sent.index("system_powerdown") < sent.index("quit")
    assert took >= timeout, "quit after %.1f s, before the %.1f s shutdown_timeout" % (took, timeout)
    assert PRESSED not in console(vm)
    assert not alive(vm.pid) and vm.pids() == []
