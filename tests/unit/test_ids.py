import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.blocklayer.qemu.plugins.module_utils import ids
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError


def test_device_id_is_kind_and_first_three_uuid_groups():
    assert ids.device_id("disk", "9e7c85f6-b6e5-4243-b27d-680b78c6d203") == "disk-9e7c85f6-b6e5-4243"


@pytest.mark.parametrize("kind", ids.KINDS)
def test_every_kind_gets_its_prefix(kind):
    assert ids.device_id(kind, "9e7c85f6-b6e5-4243-b27d-680b78c6d203") == kind + "-9e7c85f6-b6e5-4243"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        ids.device_id("gpu", "9e7c85f6-b6e5-4243-b27d-680b78c6d203")


def test_device_without_uuid_gets_a_stable_uuid5_of_instance_and_name():
    inst = "11111111-2222-3333-4444-555555555555"
    first = ids.device_uuid(inst, "disk", "root")
    assert first == ids.device_uuid(inst, "disk", "root")
    assert uuid.UUID(first).version == 5
    assert first != ids.device_uuid(inst, "disk", "data")
    assert first != ids.device_uuid("11111111-2222-3333-4444-555555555556", "disk", "root")


def test_instance_uuid_derives_from_name():
    assert ids.instance_uuid("web1") == ids.instance_uuid("web1") != ids.instance_uuid("web2")


@given(st.uuids(), st.sampled_from(["disk", "cdrom", "floppy"]), st.sampled_from(["stor", "fmt", "stor2", "fmt2", "thr"]))
def test_node_names_of_every_block_device_kind_fit_qemu_rules(u, kind, role):
    name = ids.node_name(ids.device_id(kind, str(u)), role)
    assert len(name) <= ids.NODE_NAME_MAX
    assert name[0].isalpha()
    assert ids.is_identifier(name)


@pytest.mark.parametrize("bad", ["1abc", "_abc", "a:b", "#abc", "a b", "", "a" * 32])
def test_bad_node_names_are_refused(bad):
    with pytest.raises(ConfigError):
        ids.check_node_name(bad)


@pytest.mark.parametrize("good", ["a", "a.b", "a-b_c.d", "a" * 31])
def test_good_node_names_pass(good):
    ids.check_node_name(good)


def test_canonical_uuid_refuses_garbage_with_the_option_named():
    with pytest.raises(ConfigError, match="disks\\[a\\].uuid"):
        ids.canonical_uuid("not-a-uuid", "disks[a].uuid")


@pytest.mark.parametrize("bad", ["", "-x", "a/b", "a" * 64, None, "ä"])
def test_bad_device_names_are_refused(bad):
    with pytest.raises(ConfigError, match="disks"):
        ids.check_device_name(bad, "disks")
