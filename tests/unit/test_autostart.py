"""autostart.py: ordering, shutdown classification, restart accounting, the state file, and the
options' way into the declaration and back (spec.py)."""

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import autostart, spec
from ansible_collections.blocklayer.qemu.plugins.module_utils.autostart import Memory, Seen, decide
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

BOOT, OLD_BOOT = "boot-2", "boot-1"
NOW = 100000.0


def seen(**over):
    base = dict(state_dir="/srv/vm/a", name="a", autostart=True, status="running")
    base.update(over)
    return Seen(**base)


# -- why a QEMU ended -----------------------------------------------------------------------------

@pytest.mark.parametrize("log, cause", [
    (None, None),
    (b"", None),
    (b"qemu_system_shutdown_request reason=6\n", "guest-shutdown"),
    (b"1234@1700000000.000001:qemu_system_shutdown_request reason=8\n", "guest-panic"),
    (b"qemu_system_shutdown_request reason=6\nqemu_system_shutdown_request reason=2\n", "host-qmp-quit"),
    (b"qemu_system_shutdown_request reason=4\n", "host-signal"),
    (b"qemu_system_shutdown_request reason=42\n", "cause-42"),
    (b"something else\n", None),
])
def test_last_shutdown_cause(log, cause):
    assert autostart.last_shutdown_cause(log) == cause


def test_qemu_args_log_only_the_shutdown_request():
    assert autostart.qemu_args("/srv/vm/a/qemu.log") == [
        "-D", "/srv/vm/a/qemu.log", "-d", "trace:qemu_system_shutdown_request"]


# -- what happens to one instance -----------------------------------------------------------------

@pytest.mark.parametrize("cause", ["guest-shutdown", "host-qmp-quit", "host-ui"])
def test_an_instance_someone_shut_down_stays_down(cause):
    decision = decide(seen(cause=cause), Memory(), BOOT, rebooted=True, now=NOW)
    assert decision.action == autostart.NONE and not decision.problem
    if cause == "guest-shutdown":
        assert decision.reason == "shut down by the guest"


@pytest.mark.parametrize("cause", [None, "guest-panic", "host-signal", "host-error"])
def test_a_killed_or_panicked_qemu_comes_back(cause):
    decision = decide(seen(cause=cause), Memory(), BOOT, rebooted=False, now=NOW)
    assert decision.action == autostart.START and decision.counts
    assert "restart 1 of 5" in decision.reason


def test_after_a_reboot_a_dead_qemu_starts_without_counting():
    decision = decide(seen(), Memory(restarts=[NOW - 1] * 5), BOOT, rebooted=True, now=NOW)
    assert decision.action == autostart.START and not decision.counts
    assert decision.reason == "the host rebooted"


def test_running_stopped_migrated_and_damaged_are_left_alone():
    assert decide(seen(running=True), Memory(), BOOT, True, NOW).reason == "running"
    stopped = decide(seen(status="stopped"), Memory(), BOOT, True, NOW)
    assert stopped.action == autostart.NONE and stopped.reason.startswith("stopped")
    for status in ("migrated", "incoming"):
        assert decide(seen(status=status), Memory(), BOOT, True, NOW).action == autostart.NONE
    damaged = decide(seen(damaged="runtime file x is damaged: layout is missing"), Memory(), BOOT, True, NOW)
    assert damaged.action == autostart.NONE and damaged.problem and "layout is missing" in damaged.reason


def test_stopped_by_stop_all_comes_back_at_the_next_boot_only():
    assert decide(seen(status="stopped"), Memory(host_stop=OLD_BOOT), BOOT, True, NOW).action == autostart.START
    # stop-all during this boot (systemctl stop by hand): stays down until the next boot.
    assert decide(seen(status="stopped"), Memory(host_stop=BOOT), BOOT, False, NOW).action == autostart.NONE


def test_restarts_are_capped_within_the_window_and_expire():
    memory = Memory(restarts=[NOW - 10 * i for i in range(5)])
    gave_up = decide(seen(), memory, BOOT, False, NOW)
    assert gave_up.action == autostart.NONE and gave_up.problem and "gave up after 5 restarts" in gave_up.reason
    # The oldest is older than the window: one try again.
    memory = Memory(restarts=[NOW - 8 * 3600 - 1] + [NOW - 10 * i for i in range(4)])
    again = decide(seen(), memory, BOOT, False, NOW)
    assert again.action == autostart.START and "restart 5 of 5" in again.reason
    assert decide(seen(), Memory(restarts=[NOW] * 2), BOOT, False, NOW, max_restarts=2).action == autostart.NONE


def test_a_failed_start_is_retried_and_counted_even_though_the_file_says_stopped():
    decision = decide(seen(status="stopped"), Memory(failed_start=True), BOOT, False, NOW)
    assert decision.action == autostart.START and decision.counts
    assert decision.reason.startswith("its last start by autostart failed")
    assert decide(seen(status="stopped"), Memory(failed_start=True, restarts=[NOW] * 5), BOOT, False,
                  NOW).action == autostart.NONE


# -- order ----------------------------------------------------------------------------------------

def test_start_order_is_by_order_then_name_and_stop_order_is_its_reverse():
    items = [seen(name="c", state_dir="/c", order=1), seen(name="b", state_dir="/b", order=0),
             seen(name="a", state_dir="/a", order=1), seen(name="z", state_dir="/z", order=-5),
             seen(name="h", state_dir="/h", autostart=False)]
    assert [s.name for s in autostart.start_order([s for s in items if s.autostart])] == ["z", "b", "a", "c"]
    # Instances without autostart first, then the autostart ones last-started first.
    assert [s.name for s in autostart.stop_order(items)] == ["h", "c", "a", "b", "z"]


# -- the state file -------------------------------------------------------------------------------

def test_state_round_trip_and_bad_files_start_afresh():
    state = autostart.State(boot_id=BOOT)
    state.memory("/a").restarts = [1.0, 2.0]
    state.memory("/b").host_stop = OLD_BOOT
    state.memory("/c").failed_start = True
    state.memory("/d")  # nothing to remember: not written
    back = autostart.load_state(autostart.dump_state(state))
    assert back.boot_id == BOOT and sorted(back.instances) == ["/a", "/b", "/c"]
    assert back.instances["/a"].restarts == [1.0, 2.0] and back.instances["/b"].host_stop == OLD_BOOT
    assert back.instances["/c"].failed_start
    for text in (None, b"", b"not json", b"[]", b'{"version": 99}'):
        assert autostart.load_state(text).boot_id is None


# -- the options --------------------------------------------------------------------------------

def params(**over):
    base = dict(name="a", state_dir="/srv/vm/a")
    base.update(over)
    return base


def test_autostart_is_in_the_declaration_and_comes_back_from_it():
    off = spec.instance_from(params())
    assert off.to_dict()["autostart"] is None
    on = spec.instance_from(params(autostart=True, autostart_order=3, autostart_delay=2.5))
    assert on.to_dict()["autostart"] == {"order": 3, "delay": 2.5}
    again = spec.instance_from(spec.params_from_declaration(on.to_dict()))
    assert again.to_dict() == on.to_dict()
    # A declaration recorded before the option: off.
    old = dict(off.to_dict())
    del old["autostart"]
    assert spec.instance_from(spec.params_from_declaration(old)).autostart is None


def test_a_negative_delay_is_refused_naming_the_option():
    with pytest.raises(ConfigError, match="autostart_delay"):
        spec.instance_from(params(autostart=True, autostart_delay=-1))
