"""A managed node reached over SSH, prepared by the collection itself.

An sshd of the test's own (own config, host key and authorized key, 127.0.0.1, a free port)
stands in for a fresh Debian node. ``ansible-playbook`` from the controller venv reaches it as
``node1`` with ``ansible_python_interpreter=/usr/bin/python3``, the system Python, which has no
qemu.qmp, and runs:

* the role ``blocklayer.qemu.hypervisor`` into a venv under the test's temporary directory;
* the README's example playbook (the YAML block after ``<!-- example:fleet -->``), with its
  paths moved into the temporary directory and tiny images;
* the demo, ``site.yml``, with the node in its group ``demo``;

the last two twice (the second run must change nothing, the role included), then removes
the instances. Every sshd and
QEMU the test started is ended in teardown. Run with ``make ssh-node``.
"""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import yaml

from .conftest import ROOT, play_recap, qemu_pids, readme_example

BIN = os.path.join(ROOT, ".venv", "bin")
SSHD = "/usr/sbin/sshd"
GUEST = os.path.join(ROOT, "build", "guest")
PLAYBOOK_TIMEOUT = 300


def _need(condition, why):
    if not condition:
        if os.environ.get("CI"):
            raise RuntimeError(why)
        pytest.skip(why)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    """The sshd, its inventory, and ``ansible-playbook`` against it."""

    def __init__(self, base):
        self.base = base
        self.root = os.path.join(base, "node")      # everything the node gets lives here
        self.venv = os.path.join(self.root, "venv")
        self.sshd = None
        self.port = None
        self.log = os.path.join(base, "sshd.log")
        # ssh's control sockets need a short path (sun_path is 108 bytes).
        self.control_dir = tempfile.mkdtemp(prefix="bq-ssh-")

    # ---------------------------------------------------------------- sshd
    def start(self):
        os.makedirs(self.root)
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "blocklayer-qemu-test",
                            "-f", os.path.join(self.base, key)], check=True)
        shutil.copyfile(os.path.join(self.base, "client_key.pub"), os.path.join(self.base, "authorized_keys"))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for _attempt in range(5):  # the port can be taken between _free_port() and sshd's bind
            self.port = _free_port()
            if self._start_sshd():
                break
        else:
            raise AssertionError("sshd did not start; its log:\n" + self._read_log())
        with open(os.path.join(self.base, "host_key.pub"), encoding="ascii") as handle:
            host_key = " ".join(handle.read().split()[:2])
        with open(os.path.join(self.base, "known_hosts"), "w", encoding="ascii") as handle:
            handle.write("[127.0.0.1]:%d %s\n" % (self.port, host_key))

    def _start_sshd(self):
        config = os.path.join(self.base, "sshd_config")
        with open(config, "w", encoding="ascii") as handle:
            handle.write("\n".join([
                "Port %d" % self.port,
                "ListenAddress 127.0.0.1",
                "HostKey %s" % os.path.join(self.base, "host_key"),
                "PidFile none",
                "AuthorizedKeysFile %s" % os.path.join(self.base, "authorized_keys"),
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "Subsystem sftp /usr/lib/openssh/sftp-server",
                "",
            ]))
        with open(self.log, "wb") as log:
            self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        ready = "Server listening on 127.0.0.1 port %d" % self.port
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ready in self._read_log():
                return True
            if self.sshd.poll() is not None:
                return False
            time.sleep(0.05)  # polling the log for sshd's own "listening" line, bounded above
        self.stop_sshd()
        raise AssertionError("sshd printed no %r in 20 s; its log:\n%s" % (ready, self._read_log()))

    def _read_log(self):
        with open(self.log, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop_sshd(self):
        if self.sshd and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()

    def teardown(self):
        for pid in qemu_pids(self.base):
            os.kill(pid, signal.SIGKILL)
        # End the ssh control masters, then the server (the masters' sessions end with it too).
        for sock in glob.glob(os.path.join(self.control_dir, "*")):
            subprocess.run(["ssh", "-o", "ControlPath=" + sock, "-O", "exit", "node1"],
                           capture_output=True, check=False, timeout=10)
        self.stop_sshd()
        shutil.rmtree(self.control_dir, ignore_errors=True)

    # ---------------------------------------------------------------- ansible
    def inventory(self, **groups):
        """An inventory with node1, in each group of ``groups`` (name: host variables)."""
        host = {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": os.path.join(self.base, "client_key"),
            "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                                       % os.path.join(self.base, "known_hosts"),
            "ansible_ssh_args": "-o ControlMaster=auto -o ControlPersist=60s -o ControlPath=%s/%%C"
                                % self.control_dir,
            # The node's own Python: Debian's, without qemu.qmp.
            "ansible_python_interpreter": "/usr/bin/python3",
            # root on a node without sudo: become (the README's playbook asks for it) through su.
            "ansible_become_method": "su",
            # The role's venv goes under the test's directory, not /opt.
            "hypervisor_venv": self.venv,
            # So do its autostart entry point, the code it runs and its systemd units.
            "hypervisor_autostart_lib": os.path.join(self.root, "opt", "lib"),
            "hypervisor_autostart_script": os.path.join(self.root, "usr", "local", "sbin", "blocklayer-qemu-guests"),
            "hypervisor_autostart_systemd_root": self.root,
        }
        data = {"all": {"hosts": {"node1": host},
                        "children": {g: {"hosts": {"node1": v}} for g, v in groups.items()}}}
        path = os.path.join(self.base, "inventory-%s.yml" % "-".join(sorted(groups)) if groups else "inventory.yml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle)
        return path

    def env(self):
        env = dict(os.environ)
        for var in list(env):
            if var.startswith("ANSIBLE_") or var in ("VIRTUAL_ENV", "PYTHONPATH"):
                del env[var]
        env.update(
            ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"),
            ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
            ANSIBLE_PIPELINING="true",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
        )
        return env

    def ansible(self, tool, args, expect_failure=False):
        cmd = [os.path.join(BIN, tool)] + args
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env(), capture_output=True, text=True,
                              timeout=PLAYBOOK_TIMEOUT, check=False)
        output = proc.stdout + proc.stderr
        if expect_failure:
            assert proc.returncode != 0, "%s succeeded, but should have failed:\n%s" % (" ".join(cmd), output)
        else:
            assert proc.returncode == 0, "%s failed (rc %d):\n%s" % (" ".join(cmd), proc.returncode, output)
        return output

    def playbook(self, playbook, inventory, *extra, expect_failure=False):
        output = self.ansible("ansible-playbook", ["-i", inventory, playbook] + list(extra), expect_failure)
        return play_recap(output, "node1"), output


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    _need(os.path.exists(SSHD), "%s is missing: run tools/setup.sh (apt package openssh-server)" % SSHD)
    _need(os.access(os.path.join(BIN, "ansible-playbook"), os.X_OK), "no .venv: run tools/setup.sh")
    the_node = Node(str(tmp_path_factory.mktemp("ssh-node")))
    try:
        the_node.start()
        yield the_node
    finally:
        the_node.teardown()
    assert not qemu_pids(the_node.base), "a QEMU of the test survived its teardown"


def _write_playbook(node, name, text):
    path = os.path.join(node.base, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def test_hypervisor_role_prepares_the_node(node):
    # The node's own Python cannot run the modules: that is what the role is for.
    assert subprocess.run(["/usr/bin/python3", "-c", "import qemu.qmp"], capture_output=True,
                          check=False).returncode != 0, "the system Python has qemu.qmp: the test proves nothing"
    inventory = node.inventory()
    playbook = _write_playbook(node, "hypervisor.yml", """\
- name: Prepare the node
  hosts: node1
  gather_facts: false
  roles:
    - role: blocklayer.qemu.hypervisor
  tasks:
    - name: Show the fact
      ansible.builtin.debug:
        msg: "python={{ blocklayer_qemu_python }}"
""")
    first, output = node.playbook(playbook, inventory)
    assert first["failed"] == 0 and first["changed"] > 0, output
    assert "python=%s/bin/python" % node.venv in output
    # A second run of the role is part of the second runs below, which must change nothing.
    proc = subprocess.run([os.path.join(node.venv, "bin", "python"), "-c",
                           "import importlib.metadata as m; print(m.version('qemu.qmp'))"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "0.0.6"


def test_hypervisor_role_fails_early_without_qemu(node):
    inventory = node.inventory()
    playbook = _write_playbook(node, "no-qemu.yml", """\
- name: Check a node that lacks QEMU
  hosts: node1
  gather_facts: false
  roles:
    - role: blocklayer.qemu.hypervisor
      vars:
        hypervisor_install_packages: false
        hypervisor_qemu_binary: /nonexistent/qemu-system-x86_64
""")
    result, output = node.playbook(playbook, inventory, expect_failure=True)
    assert result["failed"] == 1
    assert "/nonexistent/qemu-system-x86_64 does not run on node1" in output, output
    assert "apt-get install qemu-system-x86 qemu-utils" in output, output
    assert "Install qemu.qmp" not in output, "the check must come before the venv is made:\n" + output


def test_readme_example_on_the_node(node):
    images = os.path.join(node.root, "images")
    iso = os.path.join(node.root, "iso", "data.iso")
    state = os.path.join(node.root, "state")
    _need(os.path.exists(os.path.join(GUEST, "data.iso")), "no build/guest/data.iso: run make guest")
    os.makedirs(os.path.dirname(iso))
    shutil.copyfile(os.path.join(GUEST, "data.iso"), iso)

    text = readme_example("fleet")
    moves = [("/srv/images", images), ("/srv/iso/debian-12-netinst.iso", iso),
             ("/var/lib/blocklayer-qemu", state)]
    for old, new in moves:
        assert old in text, "the README example no longer mentions %s; update this test" % old
        text = text.replace(old, new)
    text, sizes = re.subn(r"size: \d+[GM]\b", "size: 16M", text)
    assert sizes == 2, "expected the README example to create two images"
    playbook = _write_playbook(node, "readme-example.yml", text)
    inventory = node.inventory(hypervisors={})

    first, output = node.playbook(playbook, inventory)
    assert first["failed"] == 0 and first["changed"] > 0, output
    web1 = os.path.join(state, "web1")
    assert len(qemu_pids(web1)) == 1, "no QEMU for web1 after the README example:\n" + output
    again, output = node.playbook(playbook, inventory)
    assert again["changed"] == 0, "second run of the README example changed something:\n" + output

    output = node.ansible("ansible", [
        "-i", inventory, "node1", "-m", "blocklayer.qemu.qemu_instance",
        "-a", '{"name": "web1", "state_dir": "%s", "state": "absent", "shutdown_timeout": 0}' % web1,
        "-e", "ansible_python_interpreter=%s/bin/python" % node.venv])
    assert '"changed": true' in output, output
    assert not qemu_pids(web1), "web1's QEMU is still running after state=absent"


def test_demo_on_the_node(node):
    for f in ("vmlinux", "initramfs.gz", "data.iso"):
        _need(os.path.exists(os.path.join(GUEST, f)), "no build/guest/%s: run make guest" % f)
    demo_dir = os.path.join(node.root, "demo")
    demo_state = os.path.join(node.root, "demo-state")
    inventory = node.inventory(demo={"demo_dir": demo_dir, "demo_state_dir": demo_state})
    site = os.path.join(ROOT, "site.yml")

    first, output = node.playbook(site, inventory)
    assert first["failed"] == 0 and first["changed"] > 0, output
    # The guest agent's client ran on the node and the guest saw the demo's disks.
    assert "DEMO-ROOT" in output and "DEMO-DATA" in output, output
    assert os.path.exists(os.path.join(demo_dir, "guest", "vmlinux")), "the guest was not copied to the node"
    assert len(qemu_pids(demo_state)) == 1
    again, output = node.playbook(site, inventory)
    assert again["changed"] == 0, "second run of the demo changed something:\n" + output

    # The tiny guest ignores the ACPI power button: quit QEMU at once instead of waiting.
    gone, output = node.playbook(site, inventory, "-e", "demo_state=absent", "-e", "vm_shutdown_timeout=0")
    assert gone["failed"] == 0 and gone["changed"] > 0, output
    assert not qemu_pids(demo_state), "the demo's QEMU is still running after demo_state=absent"
    assert not os.path.exists(demo_state), "state=absent left the demo's state directory"
