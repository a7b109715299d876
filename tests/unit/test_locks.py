"""Lock conflicts: QEMU's texts parsed, and the message built from given holders (no /proc)."""

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import locks, qmp
from ansible_collections.blocklayer.qemu.plugins.module_utils.locks import Holder, describe_conflict, image_of

# The texts QEMU 7.2 and 10.0 print (the same on both): on the command line with the hint line.
START_WRITE = ('qemu-system-x86_64: -device {"driver":"virtio-blk-pci","id":"disk-a","drive":"disk-a.fmt"}: '
               'Failed to get "write" lock\nIs another process using the image [/srv/images/a.raw]?\n')
START_SHARED = ('qemu-system-x86_64: -blockdev {"driver":"qcow2","node-name":"disk-a.fmt","file":"disk-a.stor"}: '
                'Failed to get shared "write" lock\nIs another process using the image [/srv/images/a, b.qcow2]?')
IMG_READ = ("qemu-img: Could not open 'tgt.qcow2': Failed to get \"consistent read\" lock\n"
            "Is another process using the image [tgt.qcow2]?")
QMP_WRITE = 'Failed to get "write" lock'  # over QMP the hint is dropped

# Lock bytes as /proc/<pid>/fdinfo shows them: 100+n "uses permission n", 200+n "does not share
# it" (n: 0 consistent read, 1 write, 3 resize), measured on a QEMU writing an image.
WRITER = ((100, 101), (103, 103), (201, 201), (203, 203))
A = Holder(pid=4242, comm="qemu-system-x86", state_dir="/var/lib/vms/a", name="web1", locked=WRITER)
HAND = Holder(pid=777, comm="qemu-system-x86", locked=WRITER)
READER = Holder(pid=99, comm="qemu-io", locked=((100, 100),))  # qemu-io -r -U: consistent read only
MIRROR = Holder(pid=4242, comm="qemu-system-x86", state_dir="/var/lib/vms/a", name="web1",
                locked=((100, 101), (103, 103), (200, 201), (203, 203)))


def fake(*found):
    seen = []

    def holders(path):
        seen.append(path)
        return list(found)
    holders.seen = seen
    return holders


@pytest.mark.parametrize("desc,path", [
    (START_WRITE, "/srv/images/a.raw"),
    (START_SHARED, "/srv/images/a, b.qcow2"),
    (IMG_READ, "tgt.qcow2"),
    (QMP_WRITE, None),
    ("Could not open '/srv/a.raw': Permission denied\nIs another process using the image [/srv/a.raw]?", None),
    ("Node disk-a.fmt is in use", None),
])
def test_image_of_reads_the_path_only_from_a_lock_conflict(desc, path):
    assert image_of(desc) == path


@pytest.mark.parametrize("desc,kind", [
    (START_WRITE, "write"), (START_SHARED, "shared write"), (IMG_READ, "consistent read"), (QMP_WRITE, "write"),
    ('Failed to get "resize" lock', None), ("Duplicate nodes with node-name='x'", None),
])
def test_lock_type(desc, kind):
    assert locks.lock_type(desc) == kind


def test_an_instance_holder_is_named_with_its_state_dir_and_pid():
    holders = fake(A)
    text = describe_conflict(START_WRITE, holders=holders)
    assert holders.seen == ["/srv/images/a.raw"]
    assert text.startswith("image /srv/images/a.raw is in use by another process")
    assert "(instance web1, state dir /var/lib/vms/a, pid 4242)" in text
    assert "stop that instance or use another image" in text


def test_a_process_of_no_instance_is_named_by_pid_and_command():
    text = describe_conflict(START_SHARED, holders=fake(HAND))
    assert "image /srv/images/a, b.qcow2 is in use by another process that writes to it (pid 777, qemu-system-x86)" \
        in text
    assert "stop that process or use another image" in text and "instance" not in text


@pytest.mark.parametrize("desc", [START_WRITE, START_SHARED])
def test_a_reader_without_the_conflicting_lock_is_left_out_when_a_holder_of_it_is_found(desc):
    text = describe_conflict(desc, holders=fake(READER, A))
    assert "pid 4242" in text and "pid 99" not in text


def test_the_job_holding_the_consistent_read_lock_is_named_not_the_writer():
    text = describe_conflict(IMG_READ, holders=fake(HAND, MIRROR))
    assert "pid 4242" in text and "pid 777" not in text


def test_processes_that_only_opened_it_are_named_when_none_holds_the_lock():
    assert "(pid 99, qemu-io)" in describe_conflict(START_WRITE, holders=fake(READER))


def test_several_holders_are_all_named():
    text = describe_conflict(START_WRITE, holders=fake(A, HAND))
    assert "(instance web1, state dir /var/lib/vms/a, pid 4242; pid 777, qemu-system-x86)" in text


def test_nobody_holding_it_points_at_nfs_or_other_users():
    text = describe_conflict(START_WRITE, holders=fake())
    assert ("image /srv/images/a.raw is in use by another process, which does not let others write it (no process "
            "of this host has it open: it may be locked over NFS or by another user's process you cannot see)") in text


def test_an_instance_whose_name_cannot_be_read_is_still_named_by_state_dir():
    nameless = Holder(pid=5, comm="qemu-system-x86", state_dir="/var/lib/vms/b", locked=WRITER)
    assert "(an instance whose name could not be read, state dir /var/lib/vms/b, pid 5)" in \
        describe_conflict(START_WRITE, holders=fake(nameless))


def test_the_own_instance_is_not_called_another_one():
    text = describe_conflict(QMP_WRITE, own_state_dir="/var/lib/vms/a", holders=fake(A), image="/srv/images/a.raw")
    assert "this instance's own QEMU, pid 4242" in text and "web1" not in text
    assert "stop that process or use another image" in text


def test_a_mirror_target_says_so_and_offers_no_force_share():
    text = describe_conflict(IMG_READ, holders=fake(MIRROR))
    assert "image tgt.qcow2 is in use by another process as a block job's target" in text
    assert "wait until that job ends, or use another image" in text and "force_share" not in text


def test_force_share_is_offered_for_write_locks():
    text = describe_conflict(START_WRITE, holders=fake(A))
    assert "a read-only disk can share it with mode: ro and force_share: true" in text


def test_no_image_gives_the_meaning_without_a_scan():
    holders = fake(A)
    text = describe_conflict(QMP_WRITE, holders=holders)
    assert holders.seen == [] and text.startswith("the image is in use by another process")


def test_not_a_lock_text_is_none_and_scans_nothing():
    holders = fake(A)
    assert describe_conflict("Node disk-a.fmt is in use", holders=holders, image="/x") is None
    assert holders.seen == []


# -- the image of a failed QMP command (the collection's own node dicts, blockdev.node_chain) --
STOR = {"execute": "blockdev-add", "arguments": {"driver": "file", "node-name": "disk-b.stor",
                                                 "filename": "/srv/images/b.raw", "read-only": False}}
FMT = {"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "disk-b.fmt", "file": "disk-b.stor"}}
DEVICE = {"execute": "device_add", "arguments": {"driver": "scsi-hd", "id": "disk-b", "drive": "disk-b.fmt"}}


@pytest.mark.parametrize("sent,path", [
    ([STOR, FMT, DEVICE], "/srv/images/b.raw"),  # raw: the device's permissions conflict
    ([STOR, FMT], "/srv/images/b.raw"),  # qcow2: its format node locks at blockdev-add
    ([{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "n",
                                                "file": {"driver": "file", "filename": "/i.qcow2"}}}], "/i.qcow2"),
    ([STOR, FMT, {"execute": "blockdev-insert-medium", "arguments": {"id": "cd", "node-name": "disk-b.fmt"}}],
     "/srv/images/b.raw"),
    ([DEVICE], None),  # the node came from an earlier session
    ([{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "loop", "file": "loop"}}], None),
    ([], None),
])
def test_image_of_commands_follows_the_nodes_to_the_filename(sent, path):
    assert locks.image_of_commands(sent) == path


@pytest.mark.parametrize("chardev,path", [
    ("socket,id=qmp,path=/var/lib/vms/a/qmp.sock,server=on,wait=off", "/var/lib/vms/a/qmp.sock"),
    ("socket,id=qmp,path=/var/lib/vms/a,,b/qmp.sock,server=on,wait=off", "/var/lib/vms/a,b/qmp.sock"),
    ("socket,id=agent,path=/var/lib/vms/a/agent.sock,server=on,wait=off", None),
    ("file,id=qmp,path=/var/lib/vms/a/console.log", None),
])
def test_qmp_socket_of_reads_the_collections_chardev(chardev, path):
    assert locks.qmp_socket_of(chardev) == path


def test_explain_of_other_texts_never_looks_for_holders(monkeypatch):
    def boom(*_args, **_kwargs):
        raise AssertionError("a /proc scan for a text that is no lock conflict")
    monkeypatch.setattr(locks, "describe_conflict", boom)
    monkeypatch.setattr(locks, "image_of_commands", boom)
    assert qmp.explain("Node disk-a.fmt is in use", [DEVICE]) == "Node disk-a.fmt is in use (a device or another " \
        "node still uses it)"


def test_explain_drops_the_hint_line_it_repeats(monkeypatch):
    monkeypatch.setattr(locks, "describe_conflict", lambda desc, own, image=None: "MEANING of %s" % image_of(desc))
    assert qmp.explain(START_WRITE) == START_WRITE.splitlines()[0] + " (MEANING of /srv/images/a.raw)"
