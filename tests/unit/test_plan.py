from ansible_collections.blocklayer.qemu.plugins.module_utils import plan


def test_same_declaration_has_no_changes():
    decl = {"disks": [{"name": "a", "cache": "none"}], "machine": {"memory": 256}}
    assert plan.changes(decl, plan.normalise(decl)) == []


def test_changes_name_the_device_and_the_option():
    before = {"disks": [{"name": "a", "cache": "none"}], "machine": {"memory": 256}}
    after = {"disks": [{"name": "a", "cache": "writeback"}], "machine": {"memory": 512}}
    assert plan.changes(before, after) == ['disks[a].cache: "none" -> "writeback"', "machine.memory: 256 -> 512"]


def test_added_disk_is_one_change_listing_names():
    before = {"disks": [{"name": "a"}]}
    after = {"disks": [{"name": "a"}, {"name": "b"}]}
    assert plan.changes(before, after) == ["disks: [a] -> [a, b]"]


def test_normalise_turns_tuples_into_lists():
    assert plan.normalise({"a": (1, 2)}) == {"a": [1, 2]}
