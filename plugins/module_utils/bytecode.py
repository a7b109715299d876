# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's compiled module_utils, kept between module runs.

Ansible runs a module from a zip it writes anew for every task; zipimport compiles each source
it imports and keeps no bytecode, which for this collection was most of what a task cost above
``ansible.builtin.ping`` (docs/design.md "Speed"). Imported first by every module, from such a
zip, this puts a finder in front of zipimport for the collection's own module_utils: each is
compiled once per content, and its code is kept in ``~/.cache/blocklayer-qemu/bytecode`` of
the user the module runs as, a directory no one else may write. A module not run from a zip
(a checkout, ``python -m``, the tests) imports as Python does, and so does everything else.
"""

from __future__ import annotations

import _imp
import importlib.machinery
import importlib.util
import marshal
import os
import stat
import sys
import types
import zipimport
import zlib

PACKAGE = __name__.rpartition(".")[0]
CACHE_PATH = (".cache", "blocklayer-qemu", "bytecode")  # below the user's home
# A cached file: importlib's magic number (Python's bytecode version), the crc32 of the
# marshalled code, the source's hash (importlib.util.source_hash), then the code.
_HEADER = 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _private(st: os.stat_result, kind) -> bool:
    """Of the effective user alone: a tampered cache would be code run as that user."""
    return kind(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def open_cache_dir(home: str, create: bool):
    """A descriptor of the cache directory below ``home``, or None when it is not there (and
    ``create`` is false) or cannot be trusted: every level must be a real directory of the
    effective user that no one else may write. The home itself may also be root's."""
    try:
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        os.close(fd)
        return None
    for name in CACHE_PATH:
        try:
            if create:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            child = None
        os.close(fd)
        if child is None:
            return None
        if not _private(os.fstat(child), stat.S_ISDIR):
            os.close(child)
            return None
        fd = child
    return fd


def cached_code(cache_fd, name: str, source: bytes, filename: str):
    """The code of ``source``: from the cache when it holds this very source, else compiled
    and, unless Python is told not to write bytecode, kept."""
    source_hash = importlib.util.source_hash(source)
    entry = "%s.%s.%s" % (name, sys.implementation.cache_tag, source_hash.hex())
    code = _read(cache_fd, entry, source_hash)
    if code is None:
        code = compile(source, filename, "exec", dont_inherit=True)
        if not sys.dont_write_bytecode:
            _write(cache_fd, name, entry, source_hash, code)
    else:
        _fix_co_filename(code, filename)
    return code


def _read(cache_fd, entry: str, source_hash: bytes):
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cache_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not _private(os.fstat(fd), stat.S_ISREG):
            return None
        data = handle.read()
    body = data[_HEADER:]
    if (data[:4] != importlib.util.MAGIC_NUMBER or data[8:_HEADER] != source_hash
            or zlib.crc32(body).to_bytes(4, "little") != data[4:8]):
        return None  # another Python, another source, or a file cut short by a crash
    try:
        code = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, types.CodeType) else None


def _write(cache_fd, name: str, entry: str, source_hash: bytes, code) -> None:
    """Atomically (a file of its own, renamed), then the entries of older sources of ``name``
    go. A full disk or a read-only home only leave the code uncached."""
    body = marshal.dumps(code)
    temp = ".%s.%d" % (entry, os.getpid())
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=cache_fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(importlib.util.MAGIC_NUMBER + zlib.crc32(body).to_bytes(4, "little") + source_hash
                             + body)
            os.replace(temp, entry, src_dir_fd=cache_fd, dst_dir_fd=cache_fd)
        except OSError:
            os.unlink(temp, dir_fd=cache_fd)
            return
        older = "%s.%s." % (name, sys.implementation.cache_tag)
        for other in os.listdir(cache_fd):
            if other != entry and other.lstrip(".").startswith(older):
                os.unlink(other, dir_fd=cache_fd)
    except OSError:
        pass


def _fix_co_filename(code, filename: str) -> None:
    # Cached code names the zip of the run that compiled it; importlib renames it as for a .pyc
    # (importlib._bootstrap_external.SourceLoader.get_code), so tracebacks name this run's file.
    _imp._fix_co_filename(code, filename)  # pylint: disable=protected-access


class CachedLoader:
    """Loads one module_utils file of the zip through the cache."""

    def __init__(self, cache_fd, source: bytes, origin: str):
        self._cache_fd = cache_fd
        self._source = source
        self._origin = origin

    def create_module(self, _spec):
        return None  # the default module object

    def exec_module(self, module) -> None:
        code = cached_code(self._cache_fd, module.__name__.rpartition(".")[2], self._source, self._origin)
        exec(code, module.__dict__)  # pylint: disable=exec-used  # what importlib does with a module's code

    def get_source(self, _fullname: str) -> str:
        return importlib.util.decode_source(self._source)  # for tracebacks (linecache)


class CachedFinder:
    """Finds the collection's module_utils in the zip this module came from."""

    def __init__(self, archive, directory: str, cache_fd):
        self._archive = archive
        self._directory = directory
        self._cache_fd = cache_fd

    def find_spec(self, fullname: str, _path=None, _target=None):
        base, _dot, tail = fullname.rpartition(".")
        if base != PACKAGE:
            return None
        origin = os.path.join(self._directory, tail + ".py")
        try:
            source = self._archive.get_data(origin)
        except OSError:
            return None  # not a module of ours in the zip: zipimport says what it is
        spec = importlib.machinery.ModuleSpec(fullname, CachedLoader(self._cache_fd, source, origin), origin=origin)
        spec.has_location = True
        return spec

    def invalidate_caches(self) -> None:
        pass


def install() -> bool:
    """Put the finder in front when this module came from a zip and the cache can be used."""
    loader = globals().get("__loader__")
    if not isinstance(loader, zipimport.zipimporter) or any(isinstance(f, CachedFinder) for f in sys.meta_path):
        return False
    home = os.environ.get("HOME")  # become (sudo -H, su -) sets the target user's
    if not home:
        return False
    cache_fd = open_cache_dir(home, create=not sys.dont_write_bytecode)
    if cache_fd is None:
        return False
    sys.meta_path.insert(0, CachedFinder(loader, os.path.dirname(__file__), cache_fd))
    return True


install()
