"""Throttling as a filter node: spec rules, chain and command line, plan, journal, recovery (pure)."""

import json

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import cmdline, hotplug, info, plan, recovery, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils import spec as spec_mod
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import RuntimePaths

from .helpers import ScriptedQmp, by_name, disk, facts_for, params, place_with_spec, reconcile, running

# QEMU's ThrottleLimits with nothing limited, as qom-get reads it back (constants, not computed).
UNLIMITED = {
    "iops-total": 0, "iops-total-max": 0, "iops-total-max-length": 1,
    "iops-read": 0, "iops-read-max": 0, "iops-read-max-length": 1,
    "iops-write": 0, "iops-write-max": 0, "iops-write-max-length": 1,
    "bps-total": 0, "bps-total-max": 0, "bps-total-max-length": 1,
    "bps-read": 0, "bps-read-max": 0, "bps-read-max-length": 1,
    "bps-write": 0, "bps-write-max": 0, "bps-write-max-length": 1,
    "iops-size": 0,
}
GROUPS = [{"name": "web", "limits": {"iops_total": 20}}, {"name": "db", "limits": {"bps_total": 1048576}}]


def full(**limits):
    return dict(UNLIMITED, **{k.replace("_", "-"): v for k, v in limits.items()})


def error_of(**over):
    with pytest.raises(ConfigError) as err:
        spec_mod.instance_from(params(**over))
    return str(err.value)


# -- spec -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("limits,needle", [
    ({"iops_total": 10, "iops_read": 5}, "disks[a].limits: iops_total and iops_read cannot be used at the same time"),
    ({"bps_total_max": 10, "bps_write_max": 5, "bps_total": 1, "bps_write": 1}, "bps_total and bps_write"),
    ({"iops_total": 100, "iops_total_max": 50}, "iops_total_max 50 is below iops_total 100"),
    ({"bps_read_max": 100}, "bps_read_max (a burst rate) needs bps_read"),
    ({"iops_total": 10, "iops_total_max_length": 5}, "iops_total_max_length needs iops_total_max"),
    ({"iops_total": 10, "iops_total_max": 20, "iops_total_max_length": 0}, "iops_total_max_length: 0 must be between 1"),
    ({"bps_total": 10, "bps_total_max": 10 ** 14, "bps_total_max_length": 11}, "bps_total_max_length: 11 seconds"),
    ({"iops_size": 4096}, "iops_size needs an iops limit"),
    ({"iops_total": -1}, "disks[a].limits.iops_total: -1 must be a whole number"),
    ({"iops_total": "10"}, "disks[a].limits.iops_total: '10' must be a whole number"),
    ({"bps_total": 10 ** 15 + 1}, "disks[a].limits.bps_total: 1000000000000001 is more than QEMU allows"),
    ({"iops": 10}, "disks[a].limits: unknown limit iops"),
])
def test_limits_are_refused_as_qemus_throttle_is_valid_refuses_them(limits, needle):
    assert needle in error_of(disks=[disk("a", limits=limits)])


def test_a_disk_cannot_have_limits_and_a_group():
    message = error_of(disks=[disk("a", limits={"iops_total": 1}, throttle_group="web")], throttle_groups=GROUPS)
    assert "disks[a]: limits and throttle_group cannot both be set" in message


def test_an_unknown_group_names_the_disk_the_group_and_the_fix():
    message = error_of(disks=[disk("a", throttle_group="nosuch")], throttle_groups=GROUPS)
    assert "disks[a].throttle_group: group 'nosuch' is not declared" in message
    assert "throttle_groups" in message


@pytest.mark.parametrize("groups,needle", [
    ([{"name": "web"}, {"name": "web"}], "throttle_groups[web]: declared twice"),
    ([{"name": "1x"}], "throttle_groups[0]: name '1x' is not valid"),
    ([{"name": "g", "limits": {"iops_read": 1, "iops_total": 2}}], "throttle_groups[g].limits: iops_total and"),
])
def test_bad_groups_are_refused_naming_the_group(groups, needle):
    assert needle in error_of(throttle_groups=groups)


def test_passthrough_disks_cannot_be_throttled():
    message = error_of(disks=[disk("a", disk_type="scsi-block", limits={"iops_total": 1})])
    assert "disks[a]: disk_type scsi-block passes SCSI commands" in message


def test_limits_keep_only_what_limits():
    s = spec_mod.instance_from(params(disks=[disk("a", limits={"iops_total": 20, "bps_total": 0, "iops_total_max": None,
                                                               "iops_total_max_length": 1}),
                                             disk("b", limits={"iops_total": 0})]))
    assert s.disks[0].limits == {"iops_total": 20}
    assert s.disks[1].limits is None  # nothing limited: no throttle node


def test_qemu_limits_are_all_19_fields():
    assert spec_mod.qemu_limits({"iops_total": 20}) == full(iops_total=20)
    assert len(spec_mod.qemu_limits(None)) == 19


# -- layout and command line ----------------------------------------------------------------------

def test_a_disk_with_limits_gets_its_own_group_and_a_throttle_node_on_top():
    s, lay = place_with_spec(disks=[disk("a", limits={"iops_total": 20}, format="qcow2")],
                             facts={"/img/a.raw": layout_qcow2()})
    a = by_name(lay, "a")
    assert [n["driver"] for n in a.nodes] == ["qcow2", "throttle"] and a.nodes[0]["file"]["driver"] == "file"
    assert a.nodes[-1] == {"driver": "throttle", "node-name": a.id + ".thr", "throttle-group": a.id + ".tg",
                           "file": a.id + ".fmt"}
    assert a.objects == ({"qom-type": "throttle-group", "id": a.id + ".tg", "limits": full(iops_total=20)},)
    assert a.props["drive"] == a.hvinfo["drive"] == a.id + ".thr"
    assert lay.throttle_groups == ()


def layout_qcow2():
    from ansible_collections.blocklayer.qemu.plugins.module_utils.layout import PathFacts
    return PathFacts("file", b"QFI\xfb")


def test_a_read_only_disk_has_a_read_only_throttle_node():
    _s, lay = place_with_spec(disks=[disk("a", mode="ro", limits={"iops_total": 20})])
    assert by_name(lay, "a").nodes[-1]["read-only"] is True


def test_command_line_has_groups_as_json_objects_before_the_blockdevs_that_use_them():
    s, lay = place_with_spec(disks=[disk("a", throttle_group="web"), disk("b", throttle_group="web"),
                                    disk("c", limits={"bps_total": 4096})], throttle_groups=GROUPS)
    argv = cmdline.build_argv(s, lay, "tcg", RuntimePaths("/run/vm"))
    objects = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-object"]
    c = by_name(lay, "c")
    # Only the used shared group ("db" is declared, no disk uses it), then the disk's own.
    assert objects == [{"qom-type": "throttle-group", "id": "tg.web", "limits": full(iops_total=20)},
                       {"qom-type": "throttle-group", "id": c.id + ".tg", "limits": full(bps_total=4096)}]
    last_object = max(i for i, a in enumerate(argv) if a == "-object")
    assert last_object < min(i for i, a in enumerate(argv) if a == "-blockdev")
    blockdevs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]
    assert [b["throttle-group"] for b in blockdevs if b["driver"] == "throttle"] == ["tg.web", "tg.web", c.id + ".tg"]
    assert lay.throttle_groups == ({"name": "web", "id": "tg.web", "limits": full(iops_total=20)},)
    assert not any("limits." in a for a in argv)


# -- plan -----------------------------------------------------------------------------------------

def test_same_throttled_declaration_plans_nothing():
    decl = dict(disks=[disk("a", limits={"iops_total": 20}), disk("b", throttle_group="web")], throttle_groups=GROUPS)
    assert reconcile(running(**decl), **decl) == []


def test_a_disk_that_gains_limits_gets_group_node_and_drive_switch_in_that_order():
    data = running(disks=[disk("a")])
    (action,) = reconcile(data, disks=[disk("a", limits={"iops_total": 20})])
    dev = action.id
    assert action.action == plan.THROTTLE
    assert list(action.commands) == [
        {"execute": "object-add", "arguments": {"qom-type": "throttle-group", "id": dev + ".tg",
                                                "limits": full(iops_total=20)}},
        {"execute": "blockdev-add", "arguments": {"driver": "throttle", "node-name": dev + ".thr",
                                                  "throttle-group": dev + ".tg", "file": dev + ".fmt"}},
        {"execute": "qom-set", "arguments": {"path": "/machine/peripheral/" + dev, "property": "drive",
                                             "value": dev + ".thr"}},
    ]
    assert action.record["props"]["drive"] == dev + ".thr"
    assert action.record["spec"]["limits"] == {"iops_total": 20}


def test_a_disk_that_loses_limits_switches_back_then_deletes_node_and_group():
    data = running(disks=[disk("a", limits={"iops_total": 20})])
    (action,) = reconcile(data, disks=[disk("a")])
    dev = action.id
    assert list(action.commands) == [
        {"execute": "qom-set", "arguments": {"path": "/machine/peripheral/" + dev, "property": "drive",
                                             "value": dev + ".fmt"}},
        {"execute": "blockdev-del", "arguments": {"node-name": dev + ".thr"}},
        {"execute": "object-del", "arguments": {"id": dev + ".tg"}},
    ]
    assert action.record["nodes"][-1]["node-name"] == dev + ".fmt" and action.record["objects"] == []


def test_changed_limits_are_one_qom_set_with_all_fields():
    data = running(disks=[disk("a", limits={"iops_total": 20, "bps_total": 4096})])
    (action,) = reconcile(data, disks=[disk("a", limits={"iops_total": 200})])
    assert list(action.commands) == [{"execute": "qom-set", "arguments": {
        "path": "/objects/%s.tg" % action.id, "property": "limits", "value": full(iops_total=200)}}]
    assert "limits.bps_total: 4096 -> null" in action.reason


def test_a_shared_groups_limits_change_is_one_qom_set_and_no_restart():
    data = running(disks=[disk("a", throttle_group="web"), disk("b", throttle_group="web")], throttle_groups=GROUPS)
    groups = [{"name": "web", "limits": {"iops_total": 200}}, GROUPS[1]]
    actions = reconcile(data, disks=[disk("a", throttle_group="web"), disk("b", throttle_group="web")],
                        throttle_groups=groups)
    assert [(a.action, a.id, list(a.commands)) for a in actions] == [(plan.GROUP_SET, "tg.web", [
        {"execute": "qom-set", "arguments": {"path": "/objects/tg.web", "property": "limits",
                                             "value": full(iops_total=200)}}])]


def test_a_new_group_is_added_before_its_first_user_and_the_last_user_removed_deletes_it_after():
    data = running(disks=[disk("a", throttle_group="web")], throttle_groups=GROUPS)
    actions = reconcile(data, disks=[disk("a", throttle_group="db"), disk("b", throttle_group="db")],
                        throttle_groups=GROUPS)
    assert [(a.action, a.name) for a in actions] == [
        (plan.GROUP_ADD, "db"), (plan.THROTTLE, "a"), (plan.ATTACH, "b"), (plan.GROUP_DEL, "web")]
    add, switch, attach, delete = actions
    assert add.commands[0] == {"execute": "object-add", "arguments": {
        "qom-type": "throttle-group", "id": "tg.db", "limits": full(bps_total=1048576)}}
    assert [c["execute"] for c in switch.commands] == ["blockdev-reopen"]
    assert switch.commands[0]["arguments"]["options"][0]["throttle-group"] == "tg.db"
    assert [c["execute"] for c in attach.commands][-2:] == ["blockdev-add", "device_add"]
    assert attach.commands[-2]["arguments"]["throttle-group"] == "tg.db"
    assert delete.commands == ({"execute": "object-del", "arguments": {"id": "tg.web"}},)


def test_detaching_the_last_disk_of_a_group_deletes_the_group_after_the_detach():
    data = running(disks=[disk("b"), disk("a", throttle_group="web")], throttle_groups=GROUPS)
    actions = reconcile(data, disks=[disk("b")], throttle_groups=GROUPS)
    assert [(a.action, a.name) for a in actions] == [(plan.DETACH, "a"), (plan.GROUP_DEL, "web")]
    detach = actions[0]
    assert [c["execute"] for c in detach.commands] == ["device_del", "blockdev-del", "blockdev-del"]
    assert detach.commands[1]["arguments"] == {"node-name": detach.id + ".thr"}


def test_a_group_held_by_a_pending_unplug_is_kept():
    data = running(disks=[disk("a", throttle_group="web")], throttle_groups=GROUPS)
    data.devices[0]["state"] = runtime.STATE_UNPLUG_PENDING
    actions = plan.reconcile(data, spec_mod.instance_from(params(throttle_groups=GROUPS)), {}, (),
                             {data.devices[0]["id"]}, ())
    assert [a.action for a in actions] == []


def test_an_ide_disk_gains_throttling_only_with_a_restart():
    data = running(disks=[disk("a", disk_type="ide")])
    (action,) = reconcile(data, disks=[disk("a", disk_type="ide", limits={"iops_total": 5})])
    assert action.action == plan.RESTART and "ide-hd" in action.reason


def test_a_record_written_before_throttling_existed_is_no_change():
    data = running(disks=[disk("a")])
    for record in data.devices:
        del record["spec"]["limits"], record["spec"]["throttle_group"]
    assert reconcile(data, disks=[disk("a")]) == []


def test_check_mode_diff_shows_limits_and_groups_readably():
    data = running(disks=[disk("a")], throttle_groups=GROUPS)
    s = spec_mod.instance_from(params(disks=[disk("a", limits={"iops_total": 20, "bps_total": 4096}),
                                             disk("b", throttle_group="web")], throttle_groups=GROUPS))
    actions = plan.reconcile(data, s, facts_for(s))
    after = info.summary(plan.expected_after(data, actions, plan.normalise(s.to_dict())))
    assert after["devices"]["disks[a]"]["limits"] == "iops_total=20 bps_total=4096"
    assert after["devices"]["disks[b]"]["throttle_group"] == "web"
    assert after["throttle_groups"] == {"web": "iops_total=20"}
    assert "limits" not in info.summary(data)["devices"]["disks[a]"]


def test_an_orphan_throttle_node_is_purged_with_its_own_group():
    data = running(disks=[disk("a")])
    orphan = "disk-aaaaaaaa-bbbb-cccc"
    actions = plan.purge_orphans(data, {d["id"] for d in data.devices}, [orphan + ".thr", orphan + ".fmt"])
    (purge,) = actions
    assert list(purge.commands) == [
        {"execute": "blockdev-del", "arguments": {"node-name": orphan + ".thr"}},
        {"execute": "blockdev-del", "arguments": {"node-name": orphan + ".fmt"}},
        {"execute": "object-del", "arguments": {"id": orphan + ".tg"}}]


# -- journal and recovery -------------------------------------------------------------------------

def gain():
    data = running(disks=[disk("a")])
    (action,) = reconcile(data, disks=[disk("a", limits={"iops_total": 20})])
    return action, runtime.Pending(**vars(hotplug.journal_entry(action)))


def lose():
    data = running(disks=[disk("a", limits={"iops_total": 20})])
    (action,) = reconcile(data, disks=[disk("a")])
    return action, runtime.Pending(**vars(hotplug.journal_entry(action)))


def test_journal_names_the_throttle_node_and_group_a_gain_creates_and_a_loss_removes():
    action, entry = gain()
    # Derived from the steps (engine.journal_names): only the kinds the action touches.
    assert entry.creates == {"nodes": [action.id + ".thr"], "objects": [action.id + ".tg"]}
    assert entry.removes == {}
    action, entry = lose()
    assert entry.removes["nodes"] == [action.id + ".thr"] and entry.removes["objects"] == [action.id + ".tg"]
    assert entry.creates == {}


def test_journal_of_group_actions_names_the_object():
    data = running(disks=[disk("a", throttle_group="web")], throttle_groups=GROUPS)
    add, _switch, delete = reconcile(data, disks=[disk("a", throttle_group="db")], throttle_groups=GROUPS)
    assert hotplug.journal_entry(add).creates == {"objects": ["tg.db"]}
    assert hotplug.journal_entry(delete).removes == {"objects": ["tg.web"]}


def test_a_killed_gain_with_the_node_added_but_the_drive_not_switched_is_undone():
    action, entry = gain()
    dev = action.id
    (undo,) = recovery.recover([entry], {dev}, {dev: dev + ".fmt"}, {dev + ".stor", dev + ".fmt", dev + ".thr"})
    assert list(undo.commands) == [{"execute": "blockdev-del", "arguments": {"node-name": dev + ".thr"}},
                                   {"execute": "object-del", "arguments": {"id": dev + ".tg"}}]
    assert undo.record["nodes"][-1]["node-name"] == dev + ".fmt"


def test_a_killed_gain_whose_drive_switched_is_adopted():
    action, entry = gain()
    dev = action.id
    (adopt,) = recovery.recover([entry], {dev}, {dev: dev + ".thr"}, {dev + ".stor", dev + ".fmt", dev + ".thr"})
    assert adopt.commands == () and adopt.record == action.record


def test_a_killed_loss_is_finished_once_the_drive_is_back_and_kept_before():
    action, entry = lose()
    dev = action.id
    nodes = {dev + ".stor", dev + ".fmt", dev + ".thr"}
    (finish,) = recovery.recover([entry], {dev}, {dev: dev + ".fmt"}, nodes)
    assert [c["execute"] for c in finish.commands] == ["blockdev-del", "object-del"]
    assert finish.record == action.record
    (keep,) = recovery.recover([entry], {dev}, {dev: dev + ".thr"}, nodes)
    assert keep.commands == () and keep.record == action.old


def test_a_killed_limits_change_is_sent_again():
    data = running(disks=[disk("a", limits={"iops_total": 20})])
    (action,) = reconcile(data, disks=[disk("a", limits={"iops_total": 200})])
    entry = runtime.Pending(**vars(hotplug.journal_entry(action)))
    (again,) = recovery.recover([entry], {action.id}, {action.id: action.id + ".thr"}, set())
    assert list(again.commands) == list(action.commands) and again.record == action.record


def test_killed_group_actions_are_finished():
    data = running(disks=[disk("a", throttle_group="web")], throttle_groups=GROUPS)
    add, _switch, delete = reconcile(data, disks=[disk("a", throttle_group="db")], throttle_groups=GROUPS)
    entries = [runtime.Pending(**vars(hotplug.journal_entry(a))) for a in (add, delete)]
    redo_add, redo_delete = recovery.recover(entries, set(), {}, set())
    assert [c["execute"] for c in redo_add.commands] == ["object-add", "qom-set"]
    assert redo_add.record["id"] == "tg.db"
    assert redo_delete.commands == ({"execute": "object-del", "arguments": {"id": "tg.web"}},)
    assert redo_delete.record is None


# -- the Applier, with a scripted QMP session ---------------------------------------------------

def test_applying_group_actions_keeps_the_runtime_groups():
    data = running(disks=[disk("a", throttle_group="web")], throttle_groups=GROUPS)
    actions = reconcile(data, disks=[disk("a", throttle_group="db")], throttle_groups=GROUPS)
    qmp = ScriptedQmp()
    hotplug.Applier(qmp, data, 5).apply(actions)
    assert [c for c, _a in qmp.sent] == ["object-add", "blockdev-reopen", "object-del"]
    assert data.throttle_groups == [{"name": "db", "id": "tg.db", "limits": full(bps_total=1048576)}]
    assert data.devices[0]["nodes"][-1]["throttle-group"] == "tg.db"


def test_a_group_still_in_use_is_kept_recorded_with_a_warning():
    data = running(disks=[disk("b"), disk("a", throttle_group="web")], throttle_groups=GROUPS)
    (_detach, delete) = reconcile(data, disks=[disk("b")], throttle_groups=GROUPS)
    applier = hotplug.Applier(ScriptedQmp({"object-del": "object 'tg.web' is in use, can not be deleted"}), data, 5)
    applier.apply([delete])
    assert [g["id"] for g in data.throttle_groups] == ["tg.web"]
    assert "throttle_groups[web] (tg.web) is still used" in applier.warnings[0]


def test_a_recovered_group_add_tolerates_an_existing_group():
    data = running(disks=[disk("a", throttle_group="web")], throttle_groups=GROUPS)
    add = reconcile(data, disks=[disk("a", throttle_group="db")], throttle_groups=GROUPS)[0]
    (redo,) = recovery.recover([hotplug.journal_entry(add)], set(), {}, set())
    qmp = ScriptedQmp({"object-add": "attempt to add duplicate property 'tg.db' to object (type 'container')"})
    hotplug.Applier(qmp, data, 5).apply([redo])
    assert [c for c, _a in qmp.sent] == ["object-add", "qom-set"]
    assert "tg.db" in [g["id"] for g in data.throttle_groups]


class AnsweringQmp(ScriptedQmp):
    """Also answers the live queries: the disk on ``root``, these nodes."""

    def __init__(self, refuse, dev, root, nodes):
        super().__init__(refuse)
        self.answers = {
            "query-block": [{"qdev": "/machine/peripheral/%s/virtio-backend" % dev, "inserted": {"node-name": root}}],
            "query-pci": [], "qom-list": [{"name": dev, "type": "child<virtio-blk-pci>"}],
            "query-named-block-nodes": [{"node-name": n} for n in nodes], "human-monitor-command": ""}

    def execute(self, command, arguments=None, timeout=None):
        answer = super().execute(command, arguments, timeout)
        return self.answers.get(command, answer)


def test_a_failed_drive_switch_is_settled_at_once_and_says_so():
    action, _entry = gain()
    dev = action.id
    data = running(disks=[disk("a")])
    qmp = AnsweringQmp({"qom-set": "Permission conflict on node"}, dev, dev + ".fmt",
                       [dev + ".stor", dev + ".fmt", dev + ".thr"])
    applier = hotplug.Applier(qmp, data, 5)
    with pytest.raises(hotplug.QemuError, match=r"disks\[a\] .*failed, and what it did was settled"):
        applier.apply([action])
    assert [c for c, _a in qmp.sent if not c.startswith(("query-", "qom-list", "human"))] == [
        "object-add", "blockdev-add", "qom-set", "blockdev-del", "object-del"]
    assert applier.unfinished == [] and data.devices[0]["nodes"][-1]["node-name"] == dev + ".fmt"
