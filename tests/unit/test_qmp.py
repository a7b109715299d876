import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import explain


@pytest.mark.parametrize("desc,meaning", [
    ('Failed to get "write" lock', "in use by another process"),
    ('Failed to get shared "write" lock', "in use by another process that writes to it"),
    ("Device disk-a is already in the process of unplug", "has not yet released the device"),
    ("Bus 'ide.0' does not support hotplugging", "cannot hot-plug or hot-unplug"),
    ("Node disk-a.fmt is in use", "still uses it"),
    ("Unknown driver 'https'", "install qemu-block-extra"),
])
def test_known_qemu_texts_get_a_translation_after_the_original(desc, meaning):
    text = explain(desc)
    assert text.startswith(desc + " (") and meaning in text


def test_unknown_texts_pass_through_unchanged():
    assert explain("Property 'virtio-blk-device.drive' can't find value 'x'") == \
        "Property 'virtio-blk-device.drive' can't find value 'x'"
