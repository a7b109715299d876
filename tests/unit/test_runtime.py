import json
import os
import stat

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError


def test_save_is_atomic_0600_in_a_0700_dir(tmp_path):
    state = tmp_path / "vm"
    runtime.ensure_state_dir(str(state))
    path = str(state / "runtime.json")
    runtime.save(path, {"version": 1, "devices": []})
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(state) == ["runtime.json"]  # no temp file left
    assert runtime.load(path) == {"version": 1, "devices": []}


def test_missing_file_loads_as_none(tmp_path):
    assert runtime.load(str(tmp_path / "nope.json")) is None


def test_corrupt_file_is_reported_not_overwritten(tmp_path):
    path = tmp_path / "runtime.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        runtime.load(str(path))
    assert path.read_text() == "{not json"


def test_version_0_pci_slot_becomes_hvinfo_and_drive_origin():
    old = {"name": "vm", "devices": [{"kind": "disk", "id": "hotdisk-123456-pci-4", "pci": 4},
                                     {"kind": "nic", "id": "hotnic-1-pci-5", "pci": 5}]}
    new = runtime.upgrade(old)
    assert new["version"] == runtime.FORMAT_VERSION
    assert new["devices"][0]["hvinfo"] == {"driver": "virtio-blk-pci", "id": "hotdisk-123456-pci-4",
                                           "bus": "pci.0", "addr": "0x4"}
    assert new["devices"][1]["hvinfo"]["driver"] == "virtio-net-pci"
    assert {d["origin"] for d in new["devices"]} == {runtime.ORIGIN_DRIVE}
    assert {d["state"] for d in new["devices"]} == {runtime.STATE_ATTACHED}


def test_newer_format_is_refused():
    with pytest.raises(ConfigError, match="newer than this collection"):
        runtime.upgrade({"version": runtime.FORMAT_VERSION + 1})


def test_saved_json_is_sorted_and_readable(tmp_path):
    path = str(tmp_path / "r.json")
    runtime.save(path, {"b": 1, "a": 2})
    assert json.loads(open(path).read()) == {"a": 2, "b": 1}
