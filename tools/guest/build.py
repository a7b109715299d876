#!/usr/bin/env python
"""Build the tiny Linux test guest into build/guest/ from Debian packages.

Outputs (relative to the repository root):
  build/guest/vmlinux        uncompressed kernel (PVH entry; boots ~3x faster under TCG)
  build/guest/vmlinuz        the Debian bzImage, as shipped
  build/guest/initramfs.gz   gzip newc cpio: busybox-static, /init, the agent, modules
  build/guest/boot.iso       El Torito (BIOS, isolinux) ISO 9660, label BLGUEST
  build/guest/data.iso       plain ISO 9660, label BLDATA, with hello.txt
  build/guest/manifest.json  paths (relative to the repo root) and versions

The .debs come from `apt-get download` (cached in build/cache/debs) and are
unpacked with `dpkg -x`. Nothing is installed on the host. A stamp over the
inputs (resolved package versions, init.sh, build.py) makes a second run a no-op.
Needs on the host: apt-get, apt-cache, dpkg, genisoimage, and zstd for a Debian
kernel whose payload or modules are zstd-compressed.

Debian 12's kernel (6.1) has an xz payload and plain .ko modules in
/lib/modules; Debian 13's (6.12) has an xz payload and .ko.xz modules in
/usr/lib/modules. The kernel payload may be xz, zstd or
gzip; modules may be .ko, .ko.xz or .ko.zst. Modules go into the initramfs
uncompressed, as .ko: busybox's insmod/modprobe/depmod read plain .ko files
(busybox has no zstd support, and init.sh insmods .ko paths).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "build" / "guest"
CACHE = ROOT / "build" / "cache"
DEBS = CACHE / "debs"
EXTRACT = CACHE / "extract"

KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
ISOLINUX = "isolinux"
SYSLINUX_COMMON = "syslinux-common"

# Modules the guest may need; their dependencies are added from .modinfo.
MODULES = [
    # virtio
    "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net",
    # SCSI core, disks, CD-ROMs
    "scsi_mod", "sd_mod", "sr_mod", "cdrom", "isofs",
    # crypto back-ends that crc-t10dif / crc64-rocksoft (sd_mod via t10-pi) ask for
    "crct10dif_generic", "crc64_rocksoft_generic",
    # HBAs
    "sym53c8xx", "megaraid_sas", "ata_piix", "ahci", "nvme",
    # floppy
    "floppy",
]

APPEND = "console=ttyS0 panic=-1 quiet"

DATA_ISO_FILES = {"hello.txt": b"hello from the CD\n"}


def set_dirs(out: Path, cache: Path) -> None:
    global OUT, CACHE, DEBS, EXTRACT  # pylint: disable=global-statement
    OUT, CACHE = out.resolve(), cache.resolve()
    DEBS, EXTRACT = CACHE / "debs", CACHE / "extract"


def log(msg: str) -> None:
    print(f"guest-build: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)
    except FileNotFoundError as exc:
        sys.exit(f"guest-build: {cmd[0]} not found ({exc}); this build needs apt-get, dpkg "
                 "and genisoimage (apt-get install genisoimage)")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"guest-build: command failed ({exc.returncode}): {' '.join(cmd)}\n"
                 f"{exc.stdout}{exc.stderr}")


# --------------------------------------------------------------------------- apt


def candidates(*pkgs: str) -> dict[str, dict]:
    """Fields (Version, Depends, ...) of the apt candidate of each package."""
    out = run(["apt-cache", "show", "--no-all-versions", *pkgs]).stdout
    found: dict[str, dict] = {}
    for stanza in out.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                fields[m.group(1)] = m.group(2)
        if "Package" in fields and "Version" in fields:
            found.setdefault(fields["Package"], fields)
    for p in pkgs:
        if p not in found:
            sys.exit(f"guest-build: apt knows no candidate for {p}; run apt-get update")
    return found


def apt_state() -> str:
    """A key that changes whenever apt's idea of the candidates may have changed."""
    h = hashlib.sha256()
    paths = sorted(Path("/var/lib/apt/lists").glob("*Packages*"))
    paths += [Path("/var/lib/dpkg/status"), Path("/etc/apt/preferences"),
              Path("/etc/apt/preferences.d"), Path("/etc/apt/sources.list"),
              Path("/etc/apt/sources.list.d")]
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()


def resolve() -> dict[str, str]:
    """Map the packages we use to their candidate versions (cached per apt state)."""
    cache_file = CACHE / "resolved.json"
    key = apt_state()
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("apt_state") == key:
            return cached["packages"]
    except (OSError, ValueError):
        pass
    found = candidates(KERNEL_META, BUSYBOX, ISOLINUX, SYSLINUX_COMMON)
    m = re.search(r"(linux-image-[0-9][^\s,(]*)", found[KERNEL_META].get("Depends", ""))
    if not m:
        sys.exit(f"guest-build: cannot find the real kernel package in {KERNEL_META}'s "
                 f"Depends: {found[KERNEL_META].get('Depends')!r}")
    kpkg = m.group(1)
    pkgs = {kpkg: candidates(kpkg)[kpkg]["Version"]}
    for p in (BUSYBOX, ISOLINUX, SYSLINUX_COMMON):
        pkgs[p] = found[p]["Version"]
    CACHE.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"apt_state": key, "packages": pkgs}, indent=2) + "\n")
    return pkgs


def deb_path(pkg: str, version: str) -> Path | None:
    # apt-get download names files NAME_VERSION_ARCH.deb with ':' escaped as %3a.
    ver = version.replace(":", "%3a")
    hits = sorted(DEBS.glob(f"{pkg}_{ver}_*.deb"))
    return hits[0] if hits else None


def download(pkgs: dict[str, str]) -> dict[str, Path]:
    DEBS.mkdir(parents=True, exist_ok=True)
    missing = [p for p, v in pkgs.items() if deb_path(p, v) is None]
    if missing:
        log("downloading " + ", ".join(f"{p}={pkgs[p]}" for p in missing))
        cmd = ["apt-get", "download", "-q"]
        if os.geteuid() == 0:
            cmd += ["-o", "APT::Sandbox::User=root"]
        run(cmd + [f"{p}={pkgs[p]}" for p in missing], cwd=DEBS)
    # Drop what earlier builds downloaded or unpacked for other versions.
    keep = {path.stem for p, v in pkgs.items() if (path := deb_path(p, v)) is not None}
    for old in list(DEBS.glob("*.deb")) + (list(EXTRACT.iterdir()) if EXTRACT.exists() else []):
        stem = old.stem if old.suffix == ".deb" else old.name
        if stem not in keep:
            log(f"removing stale {old.name}")
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    paths = {}
    for p, v in pkgs.items():
        path = deb_path(p, v)
        if path is None:
            sys.exit(f"guest-build: apt-get download did not produce {p} {v}")
        paths[p] = path
    return paths


def extract(deb: Path) -> Path:
    dest = EXTRACT / deb.stem
    done = dest / ".extracted"
    if not done.exists():
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        run(["dpkg", "-x", str(deb), str(dest)])
        done.touch()
    return dest


# --------------------------------------------------------------------------- kernel


XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst")


def unzstd(data: bytes, what: str) -> bytes:
    """Decompress zstd data with the zstd command (Python 3.11 has no zstd module)."""
    try:
        proc = subprocess.run(["zstd", "-d", "-q", "-c"], input=data, capture_output=True, check=False)
    except FileNotFoundError:
        sys.exit(f"guest-build: {what} is zstd-compressed and there is no zstd command "
                 "(apt-get install zstd; tools/setup.sh installs it)")
    if proc.returncode != 0:
        sys.exit(f"guest-build: zstd -d failed on {what}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def decompress_payload(payload: bytes) -> bytes:
    """The kernel's payload, decompressed. The kernel build appends the decompressed size
    as a 32-bit little-endian number after the compressed stream."""
    size, = struct.unpack_from("<I", payload, len(payload) - 4)
    if payload.startswith(XZ_MAGIC):
        out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(ZSTD_MAGIC):
        out = unzstd(payload[:-4], "the kernel payload")
    elif payload.startswith(GZIP_MAGIC):
        out = gzip.GzipFile(fileobj=io.BytesIO(payload[:-4])).read()
    else:
        raise ValueError(f"bzImage payload is neither xz, zstd nor gzip (starts {payload[:6].hex()})")
    if len(out) != size:
        raise ValueError(f"bzImage payload decompressed to {len(out)} bytes, the image says {size}")
    return out


def bzimage_payload(bz: bytes) -> bytes:
    """The decompressed vmlinux ELF from a bzImage with an xz, zstd or gzip payload."""
    if bz[0x202:0x206] != b"HdrS":
        raise ValueError("not a bzImage (no HdrS)")
    setup_sects = bz[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bz, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bz[start:start + payload_length]
    elf = decompress_payload(payload)
    if not elf.startswith(b"\x7fELF"):
        raise ValueError("bzImage payload is not an ELF image")
    # The payload is vmlinux.bin followed by relocation data: keep only the ELF file.
    e_shoff, = struct.unpack_from("<Q", elf, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", elf, 0x3A)
    end = max(e_shoff + e_shentsize * e_shnum, 0)
    e_phoff, = struct.unpack_from("<Q", elf, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        p_offset, = struct.unpack_from("<Q", elf, off + 8)
        p_filesz, = struct.unpack_from("<Q", elf, off + 32)
        end = max(end, p_offset + p_filesz)
    return elf[:end] if 0 < end <= len(elf) else elf


# --------------------------------------------------------------------------- modules


def module_name(path: Path) -> str:
    """``virtio_blk`` for .../virtio-blk.ko, .ko.xz or .ko.zst."""
    name = path.name
    for suffix in MODULE_SUFFIXES[::-1]:  # longest first
        if name.endswith(suffix):
            return name[:-len(suffix)].replace("-", "_")
    raise ValueError(f"not a kernel module: {path}")


def plain_name(path: Path) -> str:
    """The file name the module gets in the initramfs: always the uncompressed .ko."""
    return path.name.split(".ko")[0] + ".ko"


def read_module(path: Path) -> bytes:
    """The module's ELF bytes, decompressed from .ko.xz or .ko.zst."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data, format=lzma.FORMAT_XZ)
    if path.name.endswith(".ko.zst"):
        return unzstd(data, str(path))
    return data


def modinfo(path: Path) -> dict[str, list[str]]:
    data = read_module(path)
    info: dict[str, list[str]] = {}
    for m in re.finditer(rb"(?:^|\x00)(depends|alias|softdep)=([^\x00]*)", data):
        info.setdefault(m.group(1).decode(), []).append(m.group(2).decode())
    return info


def module_closure(moddir: Path, wanted: list[str]) -> list[Path]:
    index = {}
    for suffix in MODULE_SUFFIXES:
        for ko in (moddir / "kernel").rglob("*" + suffix):
            index.setdefault(module_name(ko), ko)
    builtin = set()
    bfile = moddir / "modules.builtin"
    if bfile.exists():
        for line in bfile.read_text().split():
            builtin.add(module_name(Path(line)) if ".ko" in line else line.rsplit("/", 1)[-1].replace("-", "_"))
    seen: dict[str, Path] = {}
    todo = list(wanted)
    while todo:
        name = todo.pop().replace("-", "_")
        if name in seen or name in builtin:
            continue
        if name not in index:
            sys.exit(f"guest-build: module {name} is neither in the kernel package nor built in")
        seen[name] = index[name]
        for dep in ",".join(modinfo(index[name]).get("depends", [])).split(","):
            if dep:
                todo.append(dep)
    return sorted(seen.values())


# --------------------------------------------------------------------------- cpio


class Cpio:
    """A minimal, reproducible newc cpio writer."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        if name in self.names:
            return
        self.names.add(name)
        nameb = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08X}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nameb)
        self.buf.write(b"\x00" * (-(110 + len(nameb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.buf.write(b"\x00" * (-self.buf.tell() % 512))
        return self.buf.getvalue()


def busybox_applets(busybox: Path) -> list[str]:
    return run([str(busybox), "--list-full"]).stdout.split()


def kernel_moddir(kroot: Path, kver: str) -> Path:
    """/lib/modules/KVER of the kernel package: /usr/lib/modules on Debian 13 (merged /usr)."""
    for moddir in (kroot / "usr" / "lib" / "modules" / kver, kroot / "lib" / "modules" / kver):
        if moddir.is_dir():
            return moddir
    sys.exit(f"guest-build: the kernel package has no lib/modules/{kver} or usr/lib/modules/{kver}")


def build_initramfs(busybox: Path, kroot: Path, kver: str, work: Path) -> tuple[bytes, list[str]]:
    moddir = kernel_moddir(kroot, kver)
    mods = module_closure(moddir, MODULES)
    # Lay the modules out in a scratch tree and let busybox's depmod write
    # modules.dep/alias/symbols in the format busybox's modprobe reads.
    stage = work / "modroot"
    if stage.exists():
        shutil.rmtree(stage)
    sdir = stage / "lib" / "modules" / kver
    for ko in mods:
        rel = ko.relative_to(moddir)
        (sdir / rel.parent).mkdir(parents=True, exist_ok=True)
        (sdir / rel.parent / plain_name(ko)).write_bytes(read_module(ko))
    for f in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        if (moddir / f).exists():
            shutil.copyfile(moddir / f, sdir / f)
    run([str(busybox), "depmod", "-b", str(stage), kver])

    c = Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run",
              "mnt", "root", "etc"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        applet = applet.lstrip("/")
        if applet != "bin/busybox":
            c.symlink(applet, "/bin/busybox")
    c.file("init", (HERE / "init.sh").read_bytes(), 0o755)
    c.file("etc/guest-release", f"kernel={kver}\n".encode())
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        c.file(str(path.relative_to(stage)), path.read_bytes())
    return c.finish(), [plain_name(p)[:-3] for p in mods]


# --------------------------------------------------------------------------- ISOs


ISOLINUX_CFG = f"""\
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL /vmlinuz
  APPEND initrd=/initrd.gz {APPEND}
"""


def build_boot_iso(sys_root: Path, iso_root: Path, vmlinuz: Path, initrd: Path,
                   out: Path, work: Path) -> None:
    stage = work / "bootiso"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "isolinux").mkdir(parents=True)
    shutil.copyfile(iso_root / "usr/lib/ISOLINUX/isolinux.bin", stage / "isolinux/isolinux.bin")
    shutil.copyfile(sys_root / "usr/lib/syslinux/modules/bios/ldlinux.c32",
                    stage / "isolinux/ldlinux.c32")
    (stage / "isolinux/isolinux.cfg").write_text(ISOLINUX_CFG)
    shutil.copyfile(vmlinuz, stage / "vmlinuz")
    shutil.copyfile(initrd, stage / "initrd.gz")
    run(["genisoimage", "-quiet", "-o", str(out), "-V", "BLGUEST", "-R", "-J",
         "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
         "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(stage)])


def build_data_iso(out: Path, work: Path) -> None:
    stage = work / "dataiso"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name, data in DATA_ISO_FILES.items():
        (stage / name).write_bytes(data)
    run(["genisoimage", "-quiet", "-o", str(out), "-V", "BLDATA", "-R", "-J", str(stage)])


# --------------------------------------------------------------------------- main


OUTPUTS = ("vmlinux", "vmlinuz", "initramfs.gz", "boot.iso", "data.iso", "manifest.json")


def inputs_hash(pkgs: dict[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(pkgs):
        h.update(f"{k}={pkgs[k]}\n".encode())
    for f in (Path(__file__).resolve(), HERE / "init.sh"):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(repr((MODULES, APPEND, DATA_ISO_FILES)).encode())
    return h.hexdigest()


def rel(p: Path) -> str:
    """A path relative to the repository root when it is inside it."""
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--out", type=Path, default=OUT, help="output directory (default build/guest)")
    ap.add_argument("--cache", type=Path, default=CACHE,
                    help="download/extract cache (default build/cache)")
    args = ap.parse_args()
    set_dirs(args.out, args.cache)
    t0 = time.monotonic()

    pkgs = resolve()
    digest = inputs_hash(pkgs)
    stamp = OUT / ".stamp"
    if (not args.force and stamp.exists() and stamp.read_text().strip() == digest
            and all((OUT / f).exists() for f in OUTPUTS)):
        manifest = json.loads((OUT / "manifest.json").read_text())
        print(f"guest: up to date in {rel(OUT)} (kernel {manifest['kernel_release']}, "
              f"{time.monotonic() - t0:.1f}s)")
        return 0

    debs = download(pkgs)
    kpkg = next(p for p in pkgs if p.startswith("linux-image-"))
    kroot = extract(debs[kpkg])
    bbroot = extract(debs[BUSYBOX])
    isoroot = extract(debs[ISOLINUX])
    sysroot = extract(debs[SYSLINUX_COMMON])

    vmlinuzs = sorted((kroot / "boot").glob("vmlinuz-*"))
    if len(vmlinuzs) != 1:
        sys.exit(f"guest-build: expected one vmlinuz in {kpkg}, found {vmlinuzs}")
    kver = vmlinuzs[0].name.removeprefix("vmlinuz-")
    # /bin/busybox on Debian 12, /usr/bin/busybox on Debian 13 (merged /usr).
    busybox = next((p for p in (bbroot / "bin" / "busybox", bbroot / "usr" / "bin" / "busybox") if p.is_file()),
                   None)
    if busybox is None:
        sys.exit(f"guest-build: no bin/busybox or usr/bin/busybox in {debs[BUSYBOX].name}")

    OUT.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    work = CACHE / "work"
    work.mkdir(parents=True, exist_ok=True)

    def atomic_write(name: str, data: bytes) -> None:
        tmp = OUT / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(OUT / name)

    atomic_write("vmlinuz", vmlinuzs[0].read_bytes())
    atomic_write("vmlinux", bzimage_payload(vmlinuzs[0].read_bytes()))
    cpio, modnames = build_initramfs(busybox, kroot, kver, work)
    atomic_write("initramfs.gz", gzip.compress(cpio, compresslevel=6, mtime=0))
    build_boot_iso(sysroot, isoroot, OUT / "vmlinuz", OUT / "initramfs.gz",
                   OUT / "boot.iso.tmp", work)
    (OUT / "boot.iso.tmp").replace(OUT / "boot.iso")
    build_data_iso(OUT / "data.iso.tmp", work)
    (OUT / "data.iso.tmp").replace(OUT / "data.iso")

    manifest = {
        "kernel_package": kpkg,
        "kernel_version": pkgs[kpkg],
        "kernel_release": kver,
        "busybox_version": pkgs[BUSYBOX],
        "isolinux_version": pkgs[ISOLINUX],
        "append": APPEND,
        "vmlinux": rel(OUT / "vmlinux"),
        "vmlinuz": rel(OUT / "vmlinuz"),
        "initramfs": rel(OUT / "initramfs.gz"),
        "boot_iso": rel(OUT / "boot.iso"),
        "boot_iso_label": "BLGUEST",
        "data_iso": rel(OUT / "data.iso"),
        "data_iso_label": "BLDATA",
        "data_iso_files": {k: v.decode() for k, v in DATA_ISO_FILES.items()},
        "agent": rel(HERE / "agent.py"),
        "modules": sorted(modnames),
        "inputs_sha256": digest,
    }
    atomic_write("manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    stamp.write_text(digest + "\n")
    sizes = ", ".join(f"{f} {(OUT / f).stat().st_size / 2**20:.1f}M"
                      for f in ("vmlinux", "initramfs.gz", "boot.iso", "data.iso"))
    print(f"guest: built {rel(OUT)} (kernel {kver}, {len(modnames)} modules; {sizes}) "
          f"in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
