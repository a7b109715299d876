"""One source for each default: the modules' argument specs (args.py), which the typed values
the core runs with (spec.HvParams, instance.Timeouts) and the vm role must agree with."""

from dataclasses import fields

from ansible_collections.blocklayer.qemu.plugins.module_utils import args, spec
from ansible_collections.blocklayer.qemu.plugins.module_utils.instance import Timeouts
from ansible_collections.blocklayer.qemu.plugins.modules import qemu_backup, qemu_blockdev, qemu_instance, qemu_migrate


def test_every_hvparam_default_is_the_modules():
    for field in fields(spec.HvParams):
        assert qemu_instance.ARGUMENT_SPEC[field.name]["default"] == field.default, field.name


def test_the_core_waits_as_long_as_the_modules_say_by_default():
    defaults = Timeouts()
    assert defaults.start == qemu_instance.ARGUMENT_SPEC["start_timeout"]["default"] \
        == qemu_migrate.ARGUMENT_SPEC["start_timeout"]["default"]
    assert defaults.shutdown == qemu_instance.ARGUMENT_SPEC["shutdown_timeout"]["default"]
    assert defaults.qmp_connect == defaults.qmp_command == qemu_instance.ARGUMENT_SPEC["qmp_timeout"]["default"]


def test_each_wait_is_one_spec_shared_by_the_modules_that_take_it():
    assert qemu_instance.ARGUMENT_SPEC["start_timeout"] is qemu_migrate.ARGUMENT_SPEC["start_timeout"] \
        is args.START_TIMEOUT
    assert qemu_instance.ARGUMENT_SPEC["unplug_timeout"] is args.UNPLUG_TIMEOUT
    assert qemu_blockdev.ARGUMENT_SPEC["job_timeout"] is qemu_backup.ARGUMENT_SPEC["job_timeout"] is args.JOB_TIMEOUT
    for module in (qemu_instance, qemu_blockdev, qemu_migrate):
        assert module.ARGUMENT_SPEC["qmp_timeout"] is args.QMP_TIMEOUT
