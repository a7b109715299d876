# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An instance's state directory, safe against other local users and against crashes.

The modules run as root on hosts where other local users exist. A path is resolved once per
run, component by component from ``/`` through directory fds, refusing anything another user
could swap (like OpenSSH's StrictModes); afterwards every file in it is reached through the
directory's fd with ``O_NOFOLLOW``, so a planted symlink is never followed. Files are replaced
atomically (unique temp file, fsync, rename, fsync of the directory). The instance lock is a
``flock`` on the directory itself, so no lock file is ever unlinked while another run waits on
it. A marker file records that the collection owns the directory, so removal only touches
what the collection created.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import secrets
import signal
import stat
import threading
import time

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

RUNTIME_FILE = "runtime.json"
# Temp files are "." + name + _TEMP_INFIX + random hex, so leftovers of a crash are recognisable.
_TEMP_INFIX = ".tmp-"
_MAX_SYMLINKS = 40  # as the kernel's path walk
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HINTS = {
    errno.ENOSPC: "free space on that filesystem and run the task again",
    errno.EDQUOT: "raise the quota or free space and run the task again",
    errno.EROFS: "the filesystem is read-only; remount it read-write or use another state_dir",
}


class _LockWaitExpired(Exception):
    """Raised by the SIGALRM handler to end a blocking flock."""


def _user(uid: int) -> str:
    """'alice (uid 1000)', or 'uid 1000' for a uid without a passwd entry."""
    try:
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % uid


def _why(exc: OSError) -> str:
    """An OS error as the user reads it: text and symbolic name."""
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return "%s [%s]" % (text, name) if name else text


def _same(one: os.stat_result, other: os.stat_result) -> bool:
    return one.st_dev == other.st_dev and one.st_ino == other.st_ino


def _check_name(name: str) -> None:
    """Only plain names inside the directory: never a path that leaves it."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError("not a plain file name: %r" % (name,))


def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "other"


def _ancestor_problem(st: os.stat_result) -> str | None:
    """Why another user could swap what lies below this directory (None when nobody can)."""
    if st.st_uid not in (0, os.geteuid()):
        return "is owned by %s" % _user(st.st_uid)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return "is writable by group or others without the sticky bit (mode %04o)" % stat.S_IMODE(st.st_mode)
    return None


def _refuse_ancestor(path: str, where: str, problem: str) -> ConfigError:
    return ConfigError(
        "state dir %s: its ancestor %s %s, so another user could replace the state dir or files in it; "
        "make %s owned by root and not writable by group or others (or sticky, like /tmp), "
        "or choose a state_dir elsewhere" % (path, where, problem, where))


def _open_dir_at(parent: int, name: str, st: os.stat_result) -> int:
    """Open ``name`` in ``parent`` without following a symlink and check it is what ``st`` saw."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    if not _same(os.fstat(fd), st):
        os.close(fd)
        raise OSError(errno.EAGAIN, "changed while being opened")
    return fd


def _stat_or_make(name: str, dir_fd: int, mode: int, create: bool):
    """lstat ``name`` in ``dir_fd``, making it a directory first when it is missing and ``create``
    says so; ``(stat, made)``, or None when it is missing and must not be made."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False), False
    except FileNotFoundError:
        if not create:
            return None
    made = False
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
        made = True
        os.fsync(dir_fd)
    except FileExistsError:
        pass  # another run made it meanwhile: checked like any existing directory
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False), made


def _open_parent(path: str, create: bool):
    """(fd of the parent of ``path``, last component), walking from / with every directory checked.

    Symlinks among the ancestors are followed by hand, and only when owned by root or the
    effective user (their directory has been checked, so nobody else can replace them). Missing
    ancestors are created 0755 when ``create``; otherwise the result is None.
    """
    head, base = os.path.split(path)
    todo = [c for c in head.split("/") if c]
    where = "/"
    fd = os.open("/", _DIR_FLAGS)
    links = 0
    try:
        problem = _ancestor_problem(os.fstat(fd))
        if problem:
            raise _refuse_ancestor(path, where, problem)
        while todo:
            comp = todo.pop(0)
            if comp == ".":
                continue
            found = _stat_or_make(comp, fd, 0o755, create)
            if found is None:
                os.close(fd)
                return None
            st, made = found
            shown = os.path.normpath(os.path.join(where, comp))
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in (0, os.geteuid()):
                    raise _refuse_ancestor(path, shown, "is a symlink owned by %s" % _user(st.st_uid))
                links += 1
                if links > _MAX_SYMLINKS:
                    raise ConfigError("state dir %s: too many levels of symlinks at %s" % (path, shown))
                target = os.readlink(comp, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIR_FLAGS)
                    where = "/"
                todo[:0] = [c for c in target.split("/") if c]
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise ConfigError("state dir %s: its ancestor %s is not a directory; choose another state_dir"
                                  % (path, shown))
            child = _open_dir_at(fd, comp, st)
            os.close(fd)
            fd = child
            where = shown
            cst = os.fstat(fd)
            if made and cst.st_uid == os.geteuid() and stat.S_IMODE(cst.st_mode) != 0o755:
                os.fchmod(fd, 0o755)  # ours, just made: undo a lax (or strict) umask
                cst = os.fstat(fd)
            problem = _ancestor_problem(cst)
            if problem:
                raise _refuse_ancestor(path, where, problem)
        return fd, base
    except BaseException:
        os.close(fd)
        raise


class StateDir:
    """An instance's state directory, opened once per module run, checked, and used only through its fd."""

    MARKER = ".blocklayer-instance"

    def __init__(self, path: str, fd: int, parent_fd: int, base: str, created: bool):
        self.path = path
        self.fd = fd
        self.created = created
        self._parent_fd = parent_fd
        self._base = base
        self._recorded_created = None  # the marker's created_dir, once read or written
        # A dir of an older collection version: no marker, but a runtime file. Noted at open,
        # since the runtime file is removed (stop) before the directory is (absent).
        self._legacy = False

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, create: bool) -> StateDir | None:
        """Open and check the state dir; None when it is missing and ``create`` is false.

        The path is made absolute (and normalised) first; that is the path checked, used and
        handed to QEMU. An existing directory is never re-moded: a wrong owner or mode is an
        error for the user to look at, since another user may have prepared it.
        """
        path = os.path.abspath(path)
        if path == "/":
            raise ConfigError("state dir / cannot be an instance's state dir; choose a directory of its own")
        try:
            return cls._open(path, create)
        except ConfigError:
            raise
        except OSError as exc:
            raise ConfigError(
                "cannot open state dir %s%s as %s: %s; run the task as the user that owns it "
                "(become: true for root), or choose another state_dir"
                % (path, _owner_note(path), _user(os.geteuid()), _why(exc))) from None

    @classmethod
    def _open(cls, path: str, create: bool) -> StateDir | None:
        found = _open_parent(path, create)
        if found is None:
            return None
        parent, base = found
        fd = None
        try:
            found = _stat_or_make(base, parent, 0o700, create)
            if found is None:
                os.close(parent)
                return None
            st, created = found
            _refuse_state_dir(path, st, created, follow=lambda: os.readlink(base, dir_fd=parent))
            fd = _open_dir_at(parent, base, st)
            fst = os.fstat(fd)
            if created and stat.S_IMODE(fst.st_mode) != 0o700:
                os.fchmod(fd, 0o700)  # ours, just made: mkdir's mode went through the umask
                fst = os.fstat(fd)
            _refuse_state_dir(path, fst, False)
            opened = cls(path, fd, parent, base, created)
            if not created:
                opened._legacy = opened.kind(cls.MARKER) is None and opened.kind(RUNTIME_FILE) == "file"
            return opened
        except BaseException:
            if fd is not None:
                os.close(fd)
            os.close(parent)
            raise

    def close(self) -> None:
        """Close the fds (which also releases the lock). Safe to call twice."""
        for fd in (self.fd, self._parent_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.fd = self._parent_fd = -1

    def __enter__(self) -> StateDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- files ----------------------------------------------------------------------------------
    def path_of(self, name: str) -> str:
        """The path of an entry, for QEMU (which opens by path, inside this checked directory)."""
        _check_name(name)
        return os.path.join(self.path, name)

    def kind(self, name: str) -> str | None:
        """What is at ``name``, not following a symlink: file, socket, symlink, dir, other or None."""
        _check_name(name)
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError("cannot look at %s: %s" % (self.path_of(name), _why(exc))) from None
        return _kind_of(st.st_mode)

    def read(self, name: str) -> bytes | None:
        """The content of a regular file, or None when missing; a symlink or anything else is refused."""
        _check_name(name)
        path = self.path_of(name)
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError("cannot read %s: %s" % (path, _why(exc))) from None
        self._refuse_not_file(name, st)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY,
                         dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError("cannot read %s: %s" % (path, _why(exc))) from None
        try:
            fst = os.fstat(fd)
            if not _same(fst, st):
                self._refuse_not_file(name, fst)
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise ConfigError("cannot read %s: %s" % (path, _why(exc))) from None
        finally:
            os.close(fd)

    def _refuse_not_file(self, name: str, st: os.stat_result) -> None:
        if stat.S_ISREG(st.st_mode):
            return
        path = self.path_of(name)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = " (to %s)" % os.readlink(name, dir_fd=self.fd)
            except OSError:
                target = ""
            raise ConfigError("%s is a symlink%s, not a file the collection wrote; it is not followed: "
                              "check who planted it, then remove it" % (path, target))
        raise ConfigError("%s is a %s, not a regular file the collection wrote; check it, then remove it"
                          % (path, _kind_of(st.st_mode)))

    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` so that a crash or a full disk leaves the old or the new content.

        The temp file is created with O_EXCL|O_NOFOLLOW (a planted entry makes another name be
        tried, never followed), and rename replaces whatever is at ``name`` (a symlink too)
        without following it.
        """
        _check_name(name)
        path = self.path_of(name)
        tmp = None
        try:
            tmp, tfd = self._create_temp(name)
            try:
                os.fchmod(tfd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(tfd, view):]
                os.fsync(tfd)
            finally:
                os.close(tfd)
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            tmp = None
        except OSError as exc:
            if tmp is not None:
                self._unlink_quietly(tmp)
            hint = _HINTS.get(exc.errno)
            raise ConfigError("could not save %s: %s; nothing was changed (%s is as it was)%s"
                              % (path, _why(exc), name, "; " + hint if hint else "")) from None
        except BaseException:
            if tmp is not None:
                self._unlink_quietly(tmp)
            raise
        self._sync("saved %s, but" % path)

    def _create_temp(self, name: str):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _attempt in range(100):
            tmp = "." + name + _TEMP_INFIX + secrets.token_hex(8)
            try:
                return tmp, os.open(tmp, flags, 0o600, dir_fd=self.fd)
            except FileExistsError:
                continue  # taken (or planted): another name, never that entry
        raise OSError(errno.EEXIST, "no free temp file name")

    def remove(self, name: str) -> None:
        """Unlink ``name`` (a symlink itself, never its target); a missing entry is fine."""
        self._unlink(name)
        self._sync("removed %s, but" % self.path_of(name))

    def _unlink(self, name: str) -> bool:
        _check_name(name)
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            raise ConfigError("%s is a directory, which the collection never creates there; move it away"
                              % self.path_of(name)) from None
        except OSError as exc:
            raise ConfigError("cannot remove %s: %s" % (self.path_of(name), _why(exc))) from None
        return True

    def _unlink_quietly(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except OSError:
            pass

    def _sync(self, done: str) -> None:
        """fsync the directory, so a rename or unlink survives a crash."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise ConfigError("%s could not flush directory %s: %s; the change may be lost in a crash"
                              % (done, self.path, _why(exc))) from None

    def prepare_for_qemu(self, names) -> None:
        """Clear the names QEMU will create (sockets, pidfile, log) so it makes fresh entries.

        Whatever is there (a stale socket, an old file, a planted symlink) is unlinked; the
        directory is the run's own and nobody else can write to it, so what QEMU creates is
        QEMU's. A directory at one of the names is refused before anything is removed.
        """
        names = list(names)
        for name in names:
            if self.kind(name) == "dir":
                raise ConfigError("%s is a directory, where QEMU must create a file or socket; move it away"
                                  % self.path_of(name))
        for name in names:
            self._unlink(name)
        self._sync("cleared %s, but" % ", ".join(names))

    # -- the instance lock ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, timeout: float, what: str):
        """Hold the instance lock: an exclusive flock on the directory fd, waited for at most ``timeout`` s.

        ``what`` names the locked thing in messages (e.g. "instance web1 state dir"). Once
        taken, the directory must still be the one at ``path``: a run that waited while another
        removed or replaced it must not work in a ghost.
        """
        try:
            taken = _flock_within(self.fd, timeout)
        except OSError as exc:
            raise ConfigError("cannot lock %s %s: %s" % (what, self.path, _why(exc))) from None
        if not taken:
            raise ConfigError("%s %s is locked by %s for more than %g s; wait for that task or end it"
                              % (what, self.path, _describe_holders(os.fstat(self.fd)), timeout))
        try:
            self._check_still_here(what)
            yield self
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _check_still_here(self, what: str) -> None:
        fst = os.fstat(self.fd)
        try:
            lst = os.lstat(self.path)
        except FileNotFoundError:
            lst = None
        if fst.st_nlink == 0 or lst is None:
            raise ConfigError("%s %s was removed by another run while this one waited for its lock; "
                              "run the task again" % (what, self.path))
        if not _same(fst, lst):
            raise ConfigError("%s %s was replaced by another directory while this run waited for its lock; "
                              "run the task again" % (what, self.path))

    # -- ownership ------------------------------------------------------------------------------
    def mark(self, name: str, uuid: str) -> None:
        """Record that the collection owns this directory (and whether it created it)."""
        previous = self.marked() or {}
        created_dir = bool(self.created or previous.get("created_dir") or self._legacy)
        data = {"name": name, "uuid": uuid, "created_dir": created_dir}
        self.write_atomic(self.MARKER, (json.dumps(data, sort_keys=True) + "\n").encode("utf-8"))
        self._recorded_created = created_dir

    def marked(self) -> dict | None:
        """The marker's content, or None when the directory carries none."""
        raw = self.read(self.MARKER)
        if raw is None:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ConfigError("%s is not a marker the collection wrote (not a JSON object); check it, then remove it"
                              % self.path_of(self.MARKER))
        self._recorded_created = bool(data.get("created_dir"))
        return data

    def _owned(self) -> bool:
        return self.marked() is not None or self._legacy or self.kind(RUNTIME_FILE) == "file"

    def remove_owned(self, names) -> list[str]:
        """Remove the collection's own entries, only in a directory the collection owns.

        Owned: it carries the marker, or a runtime file (a dir of an older collection version).
        Otherwise nothing is removed. Crash leftovers of write_atomic for these names go too;
        the marker goes last, so an interrupted removal is finished by the next run. Returns
        the names of the entries left behind.
        """
        names = list(names)
        for name in names:
            _check_name(name)
        if self._owned():
            for name in names:
                if self.kind(name) not in (None, "dir"):
                    self._unlink(name)
            prefixes = tuple("." + n + _TEMP_INFIX for n in names + [self.MARKER])
            for entry in self._entries():
                if entry.startswith(prefixes) and self.kind(entry) == "file":
                    self._unlink(entry)
            self._unlink(self.MARKER)
            self._sync("removed the instance files of %s, but" % self.path)
        return sorted(self._entries())

    def remove_dir_if_created(self) -> bool:
        """rmdir the directory if the collection created it and it is empty; whether it was removed."""
        if self._recorded_created is None:
            self.marked()
        if not (self.created or self._recorded_created or self._legacy):
            return False
        if self._entries():
            return False
        try:
            here = os.stat(self._base, dir_fd=self._parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not _same(here, os.fstat(self.fd)):
            return False  # the path is another directory now: not ours to remove
        try:
            os.rmdir(self._base, dir_fd=self._parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise ConfigError("cannot remove state dir %s: %s" % (self.path, _why(exc))) from None
        try:
            os.fsync(self._parent_fd)
        except OSError:
            pass  # the directory is gone; at worst a crash brings back an empty one
        return True

    def _entries(self) -> list:
        try:
            return os.listdir(self.fd)
        except OSError as exc:
            raise ConfigError("cannot list state dir %s: %s" % (self.path, _why(exc))) from None


def _refuse_state_dir(path: str, st: os.stat_result, created: bool, follow=None) -> None:
    """Refuse a state dir that is a symlink, not a directory, not ours, or writable by others."""
    euid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        try:
            target = " (to %s)" % follow() if follow else ""
        except OSError:
            target = ""
        raise ConfigError("state dir %s is a symlink%s; it is not followed, since whoever can change the link "
                          "could point the instance's files elsewhere: set state_dir to a real directory"
                          % (path, target))
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError("state dir %s is a %s, not a directory; move it away or choose another state_dir"
                          % (path, _kind_of(st.st_mode)))
    if st.st_uid != euid:
        if st.st_uid == 0:
            fix = "run the task as root (become: true), or give this user a state_dir of its own"
        else:
            fix = ("another user may have prepared it to take over the instance: check it, then remove it "
                   "or chown it to %s" % _user(euid))
        raise ConfigError("state dir %s is owned by %s, not by %s who runs the module; %s"
                          % (path, _user(st.st_uid), _user(euid), fix))
    if not created and st.st_mode & 0o022:
        raise ConfigError("state dir %s (owner %s) is writable by group or others (mode %04o), so another user "
                          "could plant files or sockets in it; it is not re-moded: check its content, then "
                          "chmod 0700 it" % (path, _user(st.st_uid), stat.S_IMODE(st.st_mode)))


def _owner_note(path: str) -> str:
    """' (owned by alice (uid 1000))', or the owner of the nearest existing ancestor, for messages."""
    probe = path
    while True:
        try:
            owner = _user(os.lstat(probe).st_uid)
        except OSError:
            parent = os.path.dirname(probe)
            if parent == probe:
                return ""
            probe = parent
            continue
        if probe == path:
            return " (owned by %s)" % owner
        return " (%s is owned by %s)" % (probe, owner)


def _flock_within(fd: int, timeout: float) -> bool:
    """Take LOCK_EX on ``fd``, waiting at most ``timeout`` s; whether it was taken.

    The wait is one blocking flock that a one-shot SIGALRM interrupts (no polling). The
    previous SIGALRM handler and timer are restored afterwards (a timer due meanwhile fires at
    once). Signal handlers can only be set in the main thread, where modules run.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    if timeout <= 0:
        return False
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("StateDir.lock waits with SIGALRM and must be called from the main thread")
    waiting = [True]

    def expired(_signum, _frame):
        if waiting[0]:
            raise _LockWaitExpired()

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expired)
    old_delay, old_interval = 0.0, 0.0
    taken = False
    try:
        old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, timeout)
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting[0] = False
        taken = True
    except _LockWaitExpired:
        pass
    finally:
        waiting[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if old_delay > 0:
            left = old_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), old_interval)
    if not taken:
        # The alarm may have come just after flock returned, or the holder just let go.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = True
        except BlockingIOError:
            pass
    return taken


def _lock_holders(st: os.stat_result) -> list:
    """Pids holding a FLOCK on the inode of ``st``, from /proc/locks (waiters, "->", are skipped).

    /proc/locks shows MAJ:MIN (hex) of the inode's superblock, which can differ from st_dev
    (btrfs subvolumes, overlayfs); when no line matches exactly, the inode number alone is used.
    """
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    exact, same_inode = [], []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            device = (int(major, 16), int(minor, 16))
            inode = int(inode)
        except ValueError:
            continue
        if inode != st.st_ino:
            continue
        if device == (os.major(st.st_dev), os.minor(st.st_dev)):
            exact.append(pid)
        else:
            same_inode.append(pid)
    return exact or same_inode


def _describe_holders(st: os.stat_result) -> str:
    pids = _lock_holders(st)
    if not pids:
        return "another process (not found in /proc/locks)"
    return ", ".join(_describe_pid(pid) for pid in pids)


def _describe_pid(pid: int) -> str:
    """'pid 1234 (python3 AnsiballZ_qemu_device.py)', with the user when it is not ours."""
    if pid <= 0:
        return "a process in another pid namespace"
    from ansible_collections.blocklayer.qemu.plugins.module_utils.process import cmdline_of  # on a conflict only
    args = cmdline_of(pid)
    try:
        uid = os.stat("/proc/%d" % pid).st_uid
    except OSError:
        return "pid %d (gone now, or a process that inherited its lock)" % pid
    words = [os.path.basename(a) if a.startswith("/") else a for a in args[:6]]
    command = " ".join(words)
    if len(command) > 80 or len(args) > 6:
        command = command[:77] + " ..."
    user = "" if uid == os.geteuid() else ", user %s" % _user(uid)
    return "pid %d (%s%s)" % (pid, command or "?", user)
