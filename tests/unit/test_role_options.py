"""The role blocklayer.qemu.vm takes every option of qemu_instance, and cannot drift from it.

For each option ``X`` of the module's ``ARGUMENT_SPEC`` the role must have ``vm_X`` in
``meta/argument_specs.yml`` with the same type, elements, choices, default and sub-options,
the same default in ``defaults/main.yml``, and its task must pass ``vm_X`` through as ``X``.
When the module gains an option, these tests fail until the role has it too.
"""

import os

import pytest
import yaml

from ansible_collections.blocklayer.qemu.plugins.modules.qemu_instance import ARGUMENT_SPEC

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "roles", "vm")
MODULE = "blocklayer.qemu.qemu_instance"
# Options of the role that are not module options.
ROLE_ONLY = {"vm_prepare_node", "vm_python_interpreter", "vm_images"}
# Required by the module: the role gives them a default of its own.
ROLE_DEFAULTED = {"name", "state_dir"}
# What the role uses for "leave it unset" (the task then passes ``... or omit``).
EMPTY = ("", [], {})


def _load(*parts):
    with open(os.path.join(ROLE, *parts), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


ROLE_SPEC = _load("meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
ROLE_DEFAULTS = _load("defaults", "main.yml")


def _module_task():
    tasks = [t for t in _load("tasks", "main.yml") if MODULE in t]
    assert len(tasks) == 1, "roles/vm/tasks/main.yml must call %s exactly once" % MODULE
    return tasks[0][MODULE]


MODULE_ARGS = _module_task()


def _compare(module_spec, role_spec, where):
    """Differences between a module option spec and the role's spec of it (recursive)."""
    problems = []
    for key in ("type", "elements", "choices"):
        want, got = module_spec.get(key), role_spec.get(key)
        if key == "type":
            want, got = want or "str", got or "str"
        if key == "choices" and want is not None:
            want = list(want)
        if want != got:
            problems.append("%s: %s is %r in the module, %r in the role" % (where, key, want, got))
    if bool(module_spec.get("required")) != bool(role_spec.get("required")):
        problems.append("%s: required is %r in the module, %r in the role"
                        % (where, bool(module_spec.get("required")), bool(role_spec.get("required"))))
    if module_spec.get("default") is not None and module_spec.get("default") != role_spec.get("default"):
        problems.append("%s: default is %r in the module, %r in the role"
                        % (where, module_spec.get("default"), role_spec.get("default")))
    sub_module, sub_role = module_spec.get("options") or {}, role_spec.get("options") or {}
    for name in sorted(set(sub_module) | set(sub_role)):
        if name not in sub_role:
            problems.append("%s.%s: a sub-option of the module, missing in the role" % (where, name))
        elif name not in sub_module:
            problems.append("%s.%s: a sub-option of the role, not of the module" % (where, name))
        else:
            problems.extend(_compare(sub_module[name], sub_role[name], "%s.%s" % (where, name)))
    return problems


@pytest.mark.parametrize("option", sorted(ARGUMENT_SPEC))
def test_role_declares_the_option_like_the_module(option):
    role_option = "vm_" + option
    assert role_option in ROLE_SPEC, (
        "qemu_instance has option %r but roles/vm/meta/argument_specs.yml has no %s" % (option, role_option))
    module_spec = dict(ARGUMENT_SPEC[option])
    role_spec = dict(ROLE_SPEC[role_option])
    if option in ROLE_DEFAULTED:
        module_spec.pop("required", None)
        role_spec.pop("default", None)
    problems = _compare(module_spec, role_spec, role_option)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("option", sorted(ARGUMENT_SPEC))
def test_role_default_is_the_module_default(option):
    role_option = "vm_" + option
    assert role_option in ROLE_DEFAULTS, "roles/vm/defaults/main.yml has no %s" % role_option
    if option in ROLE_DEFAULTED:
        return
    want = ARGUMENT_SPEC[option].get("default")
    got = ROLE_DEFAULTS[role_option]
    if want is None:
        assert got in EMPTY, "%s: the module has no default, so the role's must be empty, not %r" % (role_option, got)
        assert ROLE_SPEC[role_option].get("default") == got, (
            "%s: argument_specs.yml says default %r, defaults/main.yml has %r"
            % (role_option, ROLE_SPEC[role_option].get("default"), got))
    else:
        assert got == want and isinstance(got, bool) == isinstance(want, bool), (
            "%s: defaults/main.yml has %r, the module's default is %r" % (role_option, got, want))


@pytest.mark.parametrize("option", sorted(ARGUMENT_SPEC))
def test_role_task_passes_the_option_through(option):
    role_option = "vm_" + option
    assert option in MODULE_ARGS, "roles/vm/tasks/main.yml does not pass %s to %s" % (option, MODULE)
    value = MODULE_ARGS[option]
    assert isinstance(value, str) and "{{ %s" % role_option in value, (
        "roles/vm/tasks/main.yml passes %s: %r, not {{ %s ... }}" % (option, value, role_option))
    if ARGUMENT_SPEC[option].get("default") is None and option not in ROLE_DEFAULTED:
        assert "omit" in value, (
            "%s has no module default: the role's empty default must be left out (%s or omit)" % (option, role_option))


def test_role_has_no_options_the_module_lacks():
    extra = set(ROLE_SPEC) - ROLE_ONLY - {"vm_" + o for o in ARGUMENT_SPEC}
    assert not extra, "roles/vm options that qemu_instance does not have: %s" % sorted(extra)
    extra_args = set(MODULE_ARGS) - set(ARGUMENT_SPEC)
    assert not extra_args, "roles/vm passes options qemu_instance does not have: %s" % sorted(extra_args)


def test_role_defaults_and_argument_specs_name_the_same_options():
    assert set(ROLE_DEFAULTS) == set(ROLE_SPEC), (
        "only in defaults/main.yml: %s; only in argument_specs.yml: %s"
        % (sorted(set(ROLE_DEFAULTS) - set(ROLE_SPEC)), sorted(set(ROLE_SPEC) - set(ROLE_DEFAULTS))))
