"""The collection as a new user gets it: the tarball, installed, and the README's first example.

``ansible-galaxy collection build`` writes the tarball into a temporary directory and
``ansible-galaxy collection install -p <tmp>/collections`` installs it; every Ansible command
after that runs with ``ANSIBLE_COLLECTIONS_PATH`` pointing only there (no ansible.cfg of the
checkout, no other collection path), so what runs is what the tarball holds.

The README's first example (the ```yaml block after ``<!-- example:first -->``) runs with its
paths moved into the test's directory, images made with qemu-img and the installer CD an ISO
made with genisoimage, on the QEMU of the ``qemu_binary`` fixture; then again with
``--check --diff`` (nothing to change), then the instance is removed through the action group
``group/blocklayer.qemu.qemu`` of ``module_defaults``. One example run per QEMU generation: the
tarball is the same for both, but a user's QEMU may be either.
"""

import glob
import json
import os
import signal
import subprocess

import pytest
import yaml

from .conftest import ROOT, Qmp, play_recap, qemu_img, qemu_pids, readme_example

BIN = os.path.join(ROOT, ".venv", "bin")
TIMEOUT = 300


class Installed:
    """The tarball built from the checkout and installed into ``<base>/collections``."""

    def __init__(self, base):
        self.base = base
        self.collections = os.path.join(base, "collections")
        self.path = os.path.join(self.collections, "ansible_collections", "blocklayer", "qemu")
        self.config = os.path.join(base, "ansible.cfg")   # empty: Ansible's defaults, as a new user has
        with open(self.config, "w", encoding="utf-8"):
            pass

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ANSIBLE_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env.update(ANSIBLE_CONFIG=self.config, ANSIBLE_COLLECTIONS_PATH=self.collections,
                   ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCALHOST_WARNING="false",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
        return env

    def run(self, tool, *args, cwd=None, expect_failure=False, stdout=False):
        """The command's output (``stdout``: its standard output alone, e.g. JSON)."""
        cmd = [os.path.join(BIN, tool)] + [str(a) for a in args]
        proc = subprocess.run(cmd, cwd=cwd or self.base, env=self.env(), capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
        output = proc.stdout + proc.stderr
        if expect_failure:
            assert proc.returncode != 0, "%s succeeded, but should have failed:\n%s" % (" ".join(cmd), output)
        else:
            assert proc.returncode == 0, "%s failed (rc %d):\n%s" % (" ".join(cmd), proc.returncode, output)
        return proc.stdout if stdout else output

    def playbook(self, path, *extra, expect_failure=False):
        output = self.run("ansible-playbook", path, *extra, expect_failure=expect_failure)
        return play_recap(output, "localhost"), output


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not os.access(os.path.join(BIN, "ansible-galaxy"), os.X_OK):
        if os.environ.get("CI"):
            raise RuntimeError("no .venv: run tools/setup.sh")
        pytest.skip("no .venv: run tools/setup.sh")
    inst = Installed(str(tmp_path_factory.mktemp("tarball")))
    dist = os.path.join(inst.base, "dist")
    inst.run("ansible-galaxy", "collection", "build", "--output-path", dist, ROOT, cwd=ROOT)
    tarballs = glob.glob(os.path.join(dist, "blocklayer-qemu-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    inst.run("ansible-galaxy", "collection", "install", "-p", inst.collections, tarballs[0])
    return inst


def _galaxy_version():
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["version"]


def test_tarball_installs_the_collection_a_user_needs(installed):
    listed = installed.run("ansible-galaxy", "collection", "list", "blocklayer.qemu", "--format", "json", stdout=True)
    assert json.loads(listed) == {installed.collections + "/ansible_collections": {
        "blocklayer.qemu": {"version": _galaxy_version()}}}, listed
    for path in ("MANIFEST.json", "README.md", "CHANGELOG.rst", "LICENSE", "meta/runtime.yml",
                 "changelogs/changelog.yaml", "roles/hypervisor/tasks/main.yml", "docs/design.md"):
        assert os.path.isfile(os.path.join(installed.path, path)), "the tarball lacks " + path
    for path in ("tests", "tools", "bench", "requirements.txt"):
        assert not os.path.exists(os.path.join(installed.path, path)), "the tarball holds " + path
    # The version the modules say they were added in is one the changelog released.
    with open(os.path.join(installed.path, "changelogs", "changelog.yaml"), encoding="utf-8") as handle:
        releases = yaml.safe_load(handle)["releases"]
    assert _galaxy_version() in releases
    modules = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(installed.path, "plugins", "modules", "*.py")))
    docs = json.loads(installed.run("ansible-doc", "--json", *("blocklayer.qemu." + m for m in modules), stdout=True))
    assert sorted(docs) == ["blocklayer.qemu." + m for m in modules]
    for name, doc in docs.items():
        assert doc["doc"]["version_added"] in releases, name
        for key in ("qemu_error", "qemu_error_class"):
            assert doc["return"][key]["returned"] == "failure", (name, key)
    # meta/runtime.yml's action group holds every module.
    with open(os.path.join(installed.path, "meta", "runtime.yml"), encoding="utf-8") as handle:
        runtime = yaml.safe_load(handle)
    assert sorted(runtime["action_groups"]["qemu"]) == modules


def test_tarball_names_qemu_qmp_for_ansible_builder(installed):
    """What ansible-builder's introspection reads from an installed collection
    (``CollectionDefinition``: meta/execution-environment.yml, ``dependencies.python`` a path
    relative to the collection, else the collection's requirements.txt)."""
    with open(os.path.join(installed.path, "meta", "execution-environment.yml"), encoding="utf-8") as handle:
        ee = yaml.safe_load(handle)
    assert ee["version"] == 1 and set(ee["dependencies"]) == {"python"}, ee
    python = ee["dependencies"]["python"]
    assert not os.path.isabs(python)
    with open(os.path.join(installed.path, python), encoding="utf-8") as handle:
        lines = [ln.strip() for ln in handle if ln.strip() and not ln.startswith("#")]
    # The same pin the checkout's venv and the hypervisor role install.
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as handle:
        pin = [ln.strip() for ln in handle if ln.startswith("qemu.qmp")]
    with open(os.path.join(installed.path, "roles", "hypervisor", "defaults", "main.yml"), encoding="utf-8") as handle:
        role = yaml.safe_load(handle)["hypervisor_pip_packages"]
    assert lines == pin == role == ["qemu.qmp==0.0.6"]


def test_module_without_qemu_qmp_names_the_fix(installed):
    """A new user's first run is often by a Python without qemu.qmp: the system's."""
    system = "/usr/bin/python3"
    if subprocess.run([system, "-c", "import qemu.qmp"], capture_output=True, check=False).returncode == 0:
        pytest.skip("%s has qemu.qmp: nothing to prove" % system)
    output = installed.run(
        "ansible", "localhost", "-m", "blocklayer.qemu.qemu_instance_info",
        "-a", json.dumps({"name": "web1", "state_dir": os.path.join(installed.base, "nostate")}),
        "-e", "ansible_python_interpreter=" + system, expect_failure=True)
    assert "Failed to import the required Python library (qemu.qmp)" in output, output
    assert "%s -m pip install qemu.qmp==0.0.6" % system in output, output
    assert "blocklayer.qemu.hypervisor" in output and "blocklayer_qemu_python" in output, output
    assert not os.path.exists(os.path.join(installed.base, "nostate"))


def _block_files(qmp_socket):
    """Every image file QEMU has open under a device, from query-block (top to backing)."""
    with Qmp(qmp_socket) as qmp:
        blocks = qmp("query-block")
    return {b["qdev"]: b["inserted"]["file"] for b in blocks if b.get("inserted")}


def test_readme_first_example_from_the_tarball(installed, qemu_binary, tmp_path):
    images = tmp_path / "images"
    iso = tmp_path / "iso" / "installer.iso"
    state = tmp_path / "state"
    images.mkdir()
    iso.parent.mkdir()
    (tmp_path / "cd").mkdir()
    (tmp_path / "cd" / "README").write_text("installer\n")
    subprocess.run(["genisoimage", "-quiet", "-V", "INSTALLER", "-o", str(iso), str(tmp_path / "cd")],
                   check=True, capture_output=True)

    text = readme_example("first")
    for old, new in [("/srv/images", str(images)), ("/srv/iso/debian-12-netinst.iso", str(iso)),
                     ("/var/lib/blocklayer-qemu", str(state))]:
        assert old in text, "the README's first example no longer mentions %s; update this test" % old
        text = text.replace(old, new)
    play = yaml.safe_load(text)
    args = play[0]["tasks"][0]["blocklayer.qemu.qemu_instance"]
    args["qemu_binary"] = qemu_binary
    for disk in args["disks"]:
        qemu_img("create", "-q", "-f", disk.get("format", "raw"), disk["path"], "16M")
    playbook = tmp_path / "first.yml"
    playbook.write_text(yaml.safe_dump(play))
    web1 = str(state / "web1")

    try:
        first, output = installed.playbook(playbook)
        assert first["failed"] == 0 and first["changed"] == 1, output
        assert len(qemu_pids(web1)) == 1, "no QEMU for web1 after the README's first example:\n" + output
        # The three devices of the example, on the files the test made (QEMU's view).
        files = sorted(_block_files(os.path.join(web1, "qmp.sock")).values())
        assert files == sorted([str(images / "web1-data.raw"), str(images / "web1-root.qcow2"), str(iso)]), files

        again, output = installed.playbook(playbook, "--check", "--diff")
        assert again["failed"] == 0 and again["changed"] == 0, "--check --diff of the example changed:\n" + output

        remove = tmp_path / "remove.yml"
        remove.write_text(yaml.safe_dump([{
            "hosts": "localhost", "gather_facts": False,
            "module_defaults": {"group/blocklayer.qemu.qemu": {"name": "web1", "state_dir": web1}},
            "tasks": [
                {"name": "Read web1", "blocklayer.qemu.qemu_instance_info": None, "register": "info"},
                {"name": "It runs", "ansible.builtin.assert": {"that": ["info.state == 'running'"]}},
                {"name": "Remove web1", "blocklayer.qemu.qemu_instance": {"state": "absent", "shutdown_timeout": 0}},
            ]}]))
        gone, output = installed.playbook(remove)
        assert gone["failed"] == 0 and gone["changed"] == 1, output
        assert not qemu_pids(web1), "web1's QEMU is still running after state=absent:\n" + output
        assert not os.path.exists(os.path.join(web1, "runtime.json")), output
    finally:
        for pid in qemu_pids(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)
