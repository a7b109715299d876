"""The collection's bytecode cache (module_utils/bytecode.py, docs/design.md "Speed").

Ansible runs a module from a zip written for every task, so Python compiles each file of it on
every run; the collection keeps its own module_utils compiled in ~/.cache/blocklayer-qemu/bytecode
of the user the module runs as. These run the real thing: ansible-playbook (connection local)
and Python importing from a zip as Ansible's payload does, each with a home of the test's own.
The cached code is code run as that user, so a file or directory anyone else could have written
must never be run, and a cut-short file must be compiled again.
"""

import glob
import importlib.util
import marshal
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile
import zlib

import pytest

from .conftest import COLLECTIONS, ROOT, tmpfs

OWN = os.path.join(COLLECTIONS, "ansible_collections", "blocklayer", "qemu")
PACKAGE = "ansible_collections.blocklayer.qemu.plugins.module_utils"
TAG = sys.implementation.cache_tag


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path


def cache_dir(home):
    return home / ".cache" / "blocklayer-qemu" / "bytecode"


def payload(path):
    """The collection's plugins in a zip, laid out as in Ansible's payload (package __init__s empty)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("ansible_collections", "ansible_collections/blocklayer", "ansible_collections/blocklayer/qemu",
                     "ansible_collections/blocklayer/qemu/plugins",
                     "ansible_collections/blocklayer/qemu/plugins/module_utils"):
            archive.writestr(name + "/__init__.py", "")
        for source in sorted(glob.glob(os.path.join(OWN, "plugins", "module_utils", "*.py"))):
            archive.write(source, "ansible_collections/blocklayer/qemu/plugins/module_utils/" + os.path.basename(source))
    return str(path)


def python_from_zip(zip_path, home, code, **env_over):
    """Run ``code`` in a Python that imports the collection from ``zip_path``, as a module does
    (module_utils.bytecode first)."""
    env = dict(os.environ, PYTHONPATH=zip_path, HOME=str(home))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(env_over)
    script = "from %s import bytecode\n%s" % (PACKAGE, textwrap.dedent(code))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def entry_of(home, module):
    source = open(os.path.join(OWN, "plugins", "module_utils", module + ".py"), "rb").read()
    return cache_dir(home) / ("%s.%s.%s" % (module, TAG, importlib.util.source_hash(source).hex())), source


def plant(path, source, code_text):
    """A well-formed cache entry for ``source`` whose code is ``code_text``."""
    body = marshal.dumps(compile(code_text, "planted", "exec"))
    path.write_bytes(importlib.util.MAGIC_NUMBER + zlib.crc32(body).to_bytes(4, "little")
                     + importlib.util.source_hash(source) + body)


def marker_code(source, marker):
    """The module's own code, plus a line that creates ``marker``: proof that the entry ran."""
    return source.decode() + "\nopen(%r, 'w').close()\n" % str(marker)


def test_a_playbook_run_keeps_the_module_utils_compiled_in_a_private_directory(home, tmp_path):
    play = tmp_path / "play.yml"
    play.write_text(textwrap.dedent("""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: Nothing to remove
              blocklayer.qemu.qemu_instance:
                name: nothing
                state_dir: %s
                state: absent
        """ % (tmp_path / "state")))
    env = dict(os.environ, HOME=str(home), ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=" + sys.executable, str(play)]
    first = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]

    for level in (home / ".cache", home / ".cache" / "blocklayer-qemu", cache_dir(home)):
        st = os.lstat(level)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    names = sorted(p.name.split(".")[0] for p in cache_dir(home).iterdir())
    assert {"args", "task", "instance", "plan", "spec", "statedir"} <= set(names), names
    assert "bytecode" not in names  # imported by zipimport itself, before the finder exists
    for entry in cache_dir(home).iterdir():
        st = os.lstat(entry)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        assert TAG in entry.name

    # The next task runs what the cache holds: a planted entry for args (well formed, for
    # args.py as it is) creates the marker only if Ansible's run really executed it.
    entry, source = entry_of(home, "args")
    marker = tmp_path / "ran"
    plant(entry, source, marker_code(source, marker))
    second = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert marker.exists()


def test_the_cached_code_is_what_the_next_run_executes(home, tmp_path):
    zip_path = payload(tmp_path / "payload.zip")
    first = python_from_zip(zip_path, home, """
        from %s import errors
        print(type(errors.__loader__).__name__)
    """ % PACKAGE)
    assert first.returncode == 0 and first.stdout.split() == ["CachedLoader"], first.stderr
    entry, source = entry_of(home, "errors")
    assert entry.exists()
    marker = tmp_path / "ran"
    plant(entry, source, marker_code(source, marker))
    second = python_from_zip(zip_path, home, "from %s import errors" % PACKAGE)
    assert second.returncode == 0, second.stderr
    assert marker.exists()


@pytest.mark.parametrize("loose", ["group-writable entry", "entry of another user", "symlinked entry"])
def test_an_entry_someone_else_could_have_written_is_not_run_but_replaced(home, tmp_path, loose):
    zip_path = payload(tmp_path / "payload.zip")
    assert python_from_zip(zip_path, home, "from %s import errors" % PACKAGE).returncode == 0
    entry, source = entry_of(home, "errors")
    marker = tmp_path / "ran"
    planted = tmp_path / "planted"
    plant(planted, source, marker_code(source, marker))
    entry.unlink()
    if loose == "symlinked entry":
        entry.symlink_to(planted)
    else:
        shutil.copy(planted, entry)
        if loose == "group-writable entry":
            entry.chmod(0o620)
        else:
            os.chown(entry, 65534, 65534)
    run = python_from_zip(zip_path, home, "from %s import errors" % PACKAGE)
    assert run.returncode == 0, run.stderr
    assert not marker.exists()
    st = os.lstat(entry)  # compiled again and kept: the planted one is gone, the file it named untouched
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600
    assert entry.read_bytes() != planted.read_bytes()
    assert planted.exists()


@pytest.mark.parametrize("loose", ["group-writable cache directory", "symlinked .cache", "group-writable home"])
def test_a_cache_directory_someone_else_could_have_written_is_not_used(home, tmp_path, loose):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if loose == "symlinked .cache":
        (home / ".cache").symlink_to(elsewhere)
    elif loose == "group-writable home":
        home.chmod(0o770)
    else:
        cache_dir(home).mkdir(parents=True, mode=0o700)
        cache_dir(home).chmod(0o770)
    run = python_from_zip(payload(tmp_path / "payload.zip"), home, """
        from %s import errors
        print(type(errors.__loader__).__name__)
    """ % PACKAGE)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["zipimporter"]  # Python's own import: compiled, nothing kept
    assert list(elsewhere.iterdir()) == []
    if loose == "group-writable cache directory":
        assert list(cache_dir(home).iterdir()) == []


@pytest.mark.parametrize("damage", ["cut short", "checksum", "another Python's magic"])
def test_a_damaged_entry_is_compiled_again(home, tmp_path, damage):
    zip_path = payload(tmp_path / "payload.zip")
    assert python_from_zip(zip_path, home, "from %s import errors" % PACKAGE).returncode == 0
    entry, _source = entry_of(home, "errors")
    good = entry.read_bytes()
    bad = {"cut short": good[:len(good) // 2],
           "checksum": good[:-1] + bytes([good[-1] ^ 1]),
           "another Python's magic": b"\0\0\r\n" + good[4:]}[damage]
    entry.write_bytes(bad)
    run = python_from_zip(zip_path, home, """
        from %s import errors
        print(errors.ConfigError("x"))
    """ % PACKAGE)
    assert run.returncode == 0 and run.stdout.strip() == "x", run.stderr
    assert entry.read_bytes() == good


def test_a_changed_source_gets_its_own_entry_and_the_older_one_goes(home, tmp_path):
    zip_path = payload(tmp_path / "payload.zip")
    assert python_from_zip(zip_path, home, "from %s import errors" % PACKAGE).returncode == 0
    old_entry, _source = entry_of(home, "errors")
    changed = tmp_path / "changed.zip"
    with zipfile.ZipFile(zip_path) as old, zipfile.ZipFile(changed, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename.endswith("/errors.py"):
                data += b"\nCHANGED = True\n"
            new.writestr(info, data)
    run = python_from_zip(str(changed), home, """
        from %s import errors
        print(errors.CHANGED)
    """ % PACKAGE)
    assert run.returncode == 0 and run.stdout.strip() == "True", run.stderr
    errors_entries = [p.name for p in cache_dir(home).iterdir() if p.name.startswith("errors.")]
    assert len(errors_entries) == 1 and errors_entries[0] != old_entry.name


def test_a_traceback_names_this_runs_file_and_shows_its_line(home, tmp_path):
    code = """
        import traceback
        from %s import cache
        try:
            cache.io_settings("disks[a]", "fast", "threads", "ignore", "off")
        except Exception:
            print(traceback.format_exc())
    """ % PACKAGE
    first_zip = payload(tmp_path / "first.zip")
    assert "ConfigError" in python_from_zip(first_zip, home, code).stdout
    second_zip = str(tmp_path / "second.zip")
    os.rename(first_zip, second_zip)
    run = python_from_zip(second_zip, home, code)  # from the cache, compiled under first.zip
    frame = [line for line in run.stdout.splitlines() if "module_utils/cache.py" in line]
    assert frame and all(line.strip().startswith('File "%s/' % second_zip) for line in frame), run.stdout
    assert "raise ConfigError" in run.stdout


@pytest.mark.parametrize("why", ["PYTHONDONTWRITEBYTECODE", "not from a zip"])
def test_nothing_is_kept_when_python_is_told_not_to_or_the_module_is_not_zipped(home, tmp_path, why):
    if why == "PYTHONDONTWRITEBYTECODE":
        run = python_from_zip(payload(tmp_path / "payload.zip"), home, "from %s import plan" % PACKAGE,
                              PYTHONDONTWRITEBYTECODE="1")
    else:
        run = python_from_zip(COLLECTIONS, home, "from %s import plan" % PACKAGE)
    assert run.returncode == 0, run.stderr
    assert not (home / ".cache").exists()


def test_a_full_disk_leaves_the_code_uncached_and_no_file_behind(tmp_path):
    with tmpfs(tmp_path / "home", "64k") as home:
        home.chmod(0o700)
        cache_dir(home).mkdir(parents=True, mode=0o700)
        for level in (home / ".cache", home / ".cache" / "blocklayer-qemu"):
            level.chmod(0o700)
        fd = os.open(home / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        run = python_from_zip(payload(tmp_path / "payload.zip"), home, """
            from %s import plan
            print(type(plan.__loader__).__name__)
        """ % PACKAGE)
        assert run.returncode == 0 and run.stdout.split() == ["CachedLoader"], run.stderr
        assert list(cache_dir(home).iterdir()) == []  # no entry, and no half-written one left
