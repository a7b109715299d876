#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_instance
short_description: Start, stop and remove a QEMU virtual machine declared with its disks
version_added: 0.2.0
description:
  - Starts a QEMU/KVM instance whose disks, CD-ROMs and floppy are declared in the task, with
    C(-blockdev) node chains and C(-device) devices (never C(-drive)), and keeps the instance
    in that state.
  - Device IDs, PCI slots and the SCSI controller follow Ganeti's KVM designs; option names
    follow Ganeti's hvparams. Per-disk options override the instance default.
  - Everything is validated before QEMU is touched (paths, formats, qcow2 backing chains, kernel
    and initrd). Every path option must be absolute (QEMU runs in C(/)); a relative one fails naming
    the option. The runtime file is written before QEMU starts; QEMU starts paused, every device
    is verified over QMP (C(query-block) by qdev, C(query-pci), C(qom-list)), and only then does
    the guest run. On any failure that QEMU is stopped and no runtime file is left.
  - Every change is recorded in the runtime file before the first QMP command and after the
    last, so a run that is killed at any point is finished or undone by the next one; leftovers
    in the collection's own name space (device ids and node names) that no record explains are
    removed. See the collection's C(docs/faults.md).
  - A running instance follows its declaration live; disks and NICs are hot-plugged and
    hot-unplugged, CD-ROM and floppy media changed. What cannot change live (machine options,
    hvparams, the bus or cache of an attached disk, IDE and floppy drives) needs
    O(allow_restart).
  - A second run with the same declaration changes nothing and sends only five read-only QMP
    queries, however many disks there are.
  - This module never creates or deletes an image file; the only change it makes to one is
    growing it to a declared O(disks[].size) (never shrinking it). O(state=stopped) and
    O(state=absent) leave images alone. M(blocklayer.qemu.qemu_blockdev) creates the new overlays
    and copies it is given.
author:
  - blocklayer.qemu developers (@blocklayer)
extends_documentation_fragment:
  - blocklayer.qemu.instance
options:
  state:
    description:
      - C(running) starts the instance if it is not running.
      - C(stopped) asks the guest to power down (C(system_powerdown)), waits up to
        O(shutdown_timeout) seconds for it, then ends QEMU with C(quit). The runtime file is kept,
        marked C(stopped), with each disk's current chain of images, which the next start rebuilds.
      - C(absent) is C(stopped) plus removal of the files the collection created in O(state_dir)
        (only in a directory it marked as an instance's) and of the directory itself when the
        collection created it and nothing else is left in it.
      - C(stopped) and C(absent) also work when the runtime file is damaged.
    type: str
    choices: [running, stopped, absent]
    default: running
  uuid:
    description:
      - UUID of the instance. Device UUIDs that are not given are derived from it.
      - Defaults to a UUID derived from O(name), so it stays the same on every run.
    type: str
  qemu_binary:
    description:
      - The QEMU system emulator to run, by name on E(PATH) or by full path.
      - For a QEMU unpacked in a private prefix (C(<P>/usr/bin/qemu-system-x86_64)), its firmware
        and module directories are derived from the prefix; see O(qemu_firmware_dirs) and O(qemu_module_dir).
    type: str
    default: qemu-system-x86_64
  qemu_firmware_dirs:
    description:
      - Directories given to QEMU with C(-L), in order. Derived from O(qemu_binary) when not set.
    type: list
    elements: path
  qemu_module_dir:
    description:
      - Value of C(QEMU_MODULE_DIR) for QEMU. Derived from O(qemu_binary) when not set.
    type: path
  memory:
    description: Guest memory in MiB.
    type: int
    default: 256
  vcpus:
    description: Number of virtual CPUs.
    type: int
    default: 1
  machine_type:
    description: QEMU machine type. C(q35) has no built-in floppy controller; one is added when needed.
    type: str
    choices: [pc, q35]
    default: pc
  cpu_model:
    description:
      - The guest's CPU (C(-cpu)), a model with optional flags, e.g. C(Westmere) or C(qemu64,+ssse3).
      - Default - C(host) under KVM (the host CPU passed through), C(qemu64) under TCG. A fleet that
        migrates guests between hosts with different CPUs names a model every host has (libvirt's
        C(<cpu mode='custom'>), Proxmox's C(cpu) option); the model is recorded and a migration target
        starts with it.
      - A change needs a restart (O(allow_restart)).
    type: str
  accel:
    description:
      - C(auto) uses KVM when C(/dev/kvm) is writable and the CPU has vmx or svm, else TCG.
        The result returns the accelerator used.
    type: str
    choices: [auto, kvm, tcg]
    default: auto
  kernel_path:
    description: Kernel for direct kernel boot (C(-kernel)).
    type: path
  initrd_path:
    description: Initial ramdisk for direct kernel boot (C(-initrd)). Needs O(kernel_path).
    type: path
  kernel_args:
    description: Kernel command line (C(-append)). Needs O(kernel_path).
    type: str
  agent_channel:
    description:
      - Adds a second serial port (the guest's ttyS1) on the unix socket C(agent.sock) in
        O(state_dir), for a guest agent. The console (ttyS0) is logged to C(console.log).
    type: bool
    default: false
  disk_type:
    description:
      - How disks appear to the guest, unless a disk says otherwise. C(paravirtual) is
        virtio-blk-pci; C(scsi-hd), C(scsi-block) and C(scsi-generic) sit on the SCSI controller
        of O(scsi_controller_type); C(ide) on the machine's IDE/AHCI controller.
      - C(scsi-block) needs a host block device and C(scsi-generic) a host C(/dev/sgN).
    type: str
    choices: [paravirtual, scsi-hd, scsi-block, scsi-generic, ide]
    default: paravirtual
  scsi_controller_type:
    description:
      - The SCSI controller added (with id C(scsi), bus C(scsi.0)) when a SCSI disk or CD-ROM is declared.
      - C(lsi) (QEMU C(lsi53c895a)) has 8 targets, C(megasas) 65, C(virtio-scsi-pci) 256.
        Each SCSI device gets its own target (scsi-id), channel 0, lun 0.
      - lsi and megasas do not signal hot-plugged disks to a Linux guest, which needs a SCSI
        rescan to see them; prefer C(virtio-scsi-pci).
    type: str
    choices: [lsi, megasas, virtio-scsi-pci]
    default: lsi
  scsi_iothread:
    description:
      - Runs the SCSI controller, and so every SCSI disk on it, in an iothread of its own
        (C(-object iothread,id=scsi.io) and the controller's C(iothread) property), off QEMU's
        main loop. This is Proxmox's C(iothread=1) on a C(virtio-scsi-single) controller and
        libvirt's C(<driver iothread=...>) of a virtio-scsi controller.
      - Needs O(scsi_controller_type=virtio-scsi-pci); lsi and megasas cannot use an iothread.
      - Changing it on a running instance needs O(allow_restart).
    type: bool
    default: false
  kvm_pci_reservations:
    description:
      - PCI slots below this number are left to QEMU; disks, NICs and controllers get explicit
        slots from it up to 31 (30 on q35). Lower it when more PCI devices are needed.
    type: int
    default: 12
  disk_cache:
    description:
      - Default cache mode of the disks, translated to C(cache.direct)/C(cache.no-flush) on every
        node of the chain and the device's C(write-cache). C(default) is C(writeback).
    type: str
    choices: [default, writeback, none, writethrough, directsync, unsafe]
    default: default
  disk_aio:
    description:
      - Default aio mode. C(native) needs a cache mode with O_DIRECT (C(none) or C(directsync)).
        C(io_uring) is accepted only when the QEMU binary's QMP schema lists it.
    type: str
    choices: [threads, native, io_uring]
    default: threads
  disk_discard:
    description: Default discard mode of the disks.
    type: str
    choices: [ignore, unmap]
    default: ignore
  disk_detect_zeroes:
    description: Default detect-zeroes mode. C(unmap) needs discard C(unmap).
    type: str
    choices: ["off", "on", unmap]
    default: "off"
  cdrom_disk_type:
    description: Bus of the CD-ROMs. C(scsi) puts C(scsi-cd) devices on the SCSI controller.
    type: str
    choices: [ide, scsi]
    default: ide
  boot_order:
    description:
      - What the firmware boots first; ignored by a guest started with O(kernel_path).
      - C(disk) is the first disk, C(cdrom) the first CD-ROM with an image, C(floppy) the floppy.
        C(network) the first NIC.
    type: str
    choices: [disk, cdrom, floppy, network]
    default: disk
  disks:
    description: The instance's disks, in the order the guest should see them.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the disk, unique in the instance.
        type: str
        required: true
      uuid:
        description:
          - UUID of the disk; its device ID is C(disk-<first three groups>). Derived from the
            instance UUID and O(disks[].name) when not set.
        type: str
      path:
        description:
          - Image file or block device. It must exist; this module never creates or deletes
            images (a declared O(disks[].size) grows it).
        type: path
        required: true
      format:
        description: Image format. Never probed; a qcow2 image declared C(raw) is refused.
        type: str
        choices: [raw, qcow2]
        default: raw
      size:
        description:
          - Size of the disk, in bytes or with a binary unit as C(qemu-img) takes it (V(64K), V(512M),
            V(10G), V(1T); V(4096) is bytes). A multiple of 512 bytes.
          - An image smaller than this grows (C(block_resize) on the disk's top format node) at start
            before the guest runs, at hot-plug before the device is added, and on a running disk live;
            virtio-blk and SCSI disks tell the guest its new size.
          - A size smaller than the image is refused, as a shrink would lose the guest's data past it;
            a read-only disk or a host block device is never grown.
          - Left out, the disk is whatever size its image is.
        type: raw
      share_rw:
        description:
          - Lets another QEMU write the same image while this one does (the device's C(share-rw)
            property), e.g. for a disk a cluster filesystem shares between guests.
          - Only for O(disks[].format=raw); two writers of a qcow2 image would corrupt its metadata.
          - Changing it on an attached disk needs O(allow_restart).
        type: bool
        default: false
      force_share:
        description:
          - Opens the image although another process holds its lock (C(force-share) on the disk's
            protocol and format nodes), e.g. to read an image another QEMU writes. What it reads may
            be inconsistent while the other writes.
          - Only with O(disks[].mode=ro); QEMU refuses it on a writable node.
          - Changing it on an attached disk needs O(allow_restart).
        type: bool
        default: false
      mode:
        description: C(ro) attaches the disk read-only.
        type: str
        choices: [rw, ro]
        default: rw
      disk_type:
        description: Overrides O(disk_type) for this disk.
        type: str
        choices: [paravirtual, scsi-hd, scsi-block, scsi-generic, ide]
      cache:
        description: Overrides O(disk_cache) for this disk.
        type: str
        choices: [default, writeback, none, writethrough, directsync, unsafe]
      aio:
        description: Overrides O(disk_aio) for this disk.
        type: str
        choices: [threads, native, io_uring]
      discard:
        description: Overrides O(disk_discard) for this disk.
        type: str
        choices: [ignore, unmap]
      detect_zeroes:
        description: Overrides O(disk_detect_zeroes) for this disk.
        type: str
        choices: ["off", "on", unmap]
      serial:
        description:
          - Serial number the guest sees (up to 20 letters, digits, C(-), C(_), C(.)).
          - Defaults to the first 20 hex digits of the disk's UUID, so guest and declaration can be matched.
        type: str
      iothread:
        description:
          - Gives the disk an iothread of its own (C(-object iothread) with id C(<device id>.io) and the
            device's C(iothread) property), so its I/O runs off QEMU's main loop; at hot-plug the
            iothread is added before the device (C(object-add)) and deleted after it is gone (C(object-del)).
            This is Proxmox's C(iothread=1) on a virtio disk and libvirt's C(<driver iothread=...>).
          - Only for virtio-blk disks (O(disks[].disk_type=paravirtual)); SCSI disks use their
            controller's, see O(scsi_iothread).
          - Changing it on an attached disk needs O(allow_restart), as any other option of an attached disk.
        type: bool
        default: false
      limits:
        description:
          - I/O limits of this disk alone. The disk gets a throttle group of its own (C(-object
            throttle-group) with id C(<device id>.tg)) and a C(throttle) filter node (C(<device id>.thr))
            on top of its chain, which the device uses.
          - Checked before QEMU is asked, the way QEMU's C(throttle_is_valid()) checks them. A total limit
            and read/write limits of the same kind cannot be combined, a burst rate (C(_max)) needs its
            rate and cannot be below it, a burst length (C(_max_length)) needs a burst rate.
          - Changes live. Limits changed are one C(qom-set) of the group's C(limits) with all fields (0 for
            what is not limited); a disk that gains limits gets its group and throttle node and is switched
            onto it (C(qom-set) of the device's C(drive)); one that loses them is switched back and both are
            deleted. The device and the guest's disk stay. Adding or removing limits on a running IDE disk
            needs O(allow_restart).
          - Not for C(scsi-block) or C(scsi-generic), whose SCSI commands go to the host device.
          - Mutually exclusive with O(disks[].throttle_group).
        type: dict
        suboptions:
          iops_total:
            description:
              - I/O operations per second, reads and writes together (QEMU C(iops-total)); 0 or
                unset is no limit.
            type: int
          iops_total_max:
            description:
              - A burst rate above O(disks[].limits.iops_total) that lasts up to
                O(disks[].limits.iops_total_max_length) seconds (C(iops-total-max)).
            type: int
          iops_total_max_length:
            description:
              - Seconds a burst at O(disks[].limits.iops_total_max) may last (C(iops-total-max-
                length)); QEMU's default is 1.
            type: int
          iops_read:
            description: Read operations per second (QEMU C(iops-read)); 0 or unset is no limit.
            type: int
          iops_read_max:
            description:
              - A burst rate above O(disks[].limits.iops_read) that lasts up to
                O(disks[].limits.iops_read_max_length) seconds (C(iops-read-max)).
            type: int
          iops_read_max_length:
            description:
              - Seconds a burst at O(disks[].limits.iops_read_max) may last (C(iops-read-max-
                length)); QEMU's default is 1.
            type: int
          iops_write:
            description: Write operations per second (QEMU C(iops-write)); 0 or unset is no limit.
            type: int
          iops_write_max:
            description:
              - A burst rate above O(disks[].limits.iops_write) that lasts up to
                O(disks[].limits.iops_write_max_length) seconds (C(iops-write-max)).
            type: int
          iops_write_max_length:
            description:
              - Seconds a burst at O(disks[].limits.iops_write_max) may last (C(iops-write-max-
                length)); QEMU's default is 1.
            type: int
          bps_total:
            description:
              - Bytes per second, read and written together (QEMU C(bps-total)); 0 or unset is no
                limit.
            type: int
          bps_total_max:
            description:
              - A burst rate above O(disks[].limits.bps_total) that lasts up to
                O(disks[].limits.bps_total_max_length) seconds (C(bps-total-max)).
            type: int
          bps_total_max_length:
            description:
              - Seconds a burst at O(disks[].limits.bps_total_max) may last (C(bps-total-max-
                length)); QEMU's default is 1.
            type: int
          bps_read:
            description: Bytes read per second (QEMU C(bps-read)); 0 or unset is no limit.
            type: int
          bps_read_max:
            description:
              - A burst rate above O(disks[].limits.bps_read) that lasts up to
                O(disks[].limits.bps_read_max_length) seconds (C(bps-read-max)).
            type: int
          bps_read_max_length:
            description:
              - Seconds a burst at O(disks[].limits.bps_read_max) may last (C(bps-read-max-length));
                QEMU's default is 1.
            type: int
          bps_write:
            description: Bytes written per second (QEMU C(bps-write)); 0 or unset is no limit.
            type: int
          bps_write_max:
            description:
              - A burst rate above O(disks[].limits.bps_write) that lasts up to
                O(disks[].limits.bps_write_max_length) seconds (C(bps-write-max)).
            type: int
          bps_write_max_length:
            description:
              - Seconds a burst at O(disks[].limits.bps_write_max) may last (C(bps-write-max-
                length)); QEMU's default is 1.
            type: int
          iops_size:
            description:
              - Bytes counted as one operation by the iops limits, so a larger request counts as
                several (C(iops-size)).
            type: int
      throttle_group:
        description:
          - The name of a group of O(throttle_groups). This disk's I/O counts against the group's limits,
            together with every other disk of that group. Changes live, as O(disks[].limits) does.
          - Mutually exclusive with O(disks[].limits).
        type: str
  throttle_groups:
    description:
      - Named throttle groups that disks share (O(disks[].throttle_group)). Every disk of a group counts
        against one set of limits, as QEMU's C(throttle-group) object (id C(tg.<name>)) does.
      - A group exists in QEMU while a disk uses it. It is added before its first disk and deleted after
        its last. Its limits change live (one C(qom-set)).
      - M(blocklayer.qemu.qemu_device) can put its disks in the groups recorded here.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The group's name (letters, digits, C(-), C(.), C(_), starting with a letter).
        type: str
        required: true
      limits:
        description: The group's limits, with the same fields and rules as O(disks[].limits).
        type: dict
        suboptions:
          iops_total:
            description:
              - I/O operations per second, reads and writes together (QEMU C(iops-total)); 0 or
                unset is no limit.
            type: int
          iops_total_max:
            description:
              - A burst rate above O(throttle_groups[].limits.iops_total) that lasts up to
                O(throttle_groups[].limits.iops_total_max_length) seconds (C(iops-total-max)).
            type: int
          iops_total_max_length:
            description:
              - Seconds a burst at O(throttle_groups[].limits.iops_total_max) may last (C(iops-
                total-max-length)); QEMU's default is 1.
            type: int
          iops_read:
            description: Read operations per second (QEMU C(iops-read)); 0 or unset is no limit.
            type: int
          iops_read_max:
            description:
              - A burst rate above O(throttle_groups[].limits.iops_read) that lasts up to
                O(throttle_groups[].limits.iops_read_max_length) seconds (C(iops-read-max)).
            type: int
          iops_read_max_length:
            description:
              - Seconds a burst at O(throttle_groups[].limits.iops_read_max) may last (C(iops-read-
                max-length)); QEMU's default is 1.
            type: int
          iops_write:
            description: Write operations per second (QEMU C(iops-write)); 0 or unset is no limit.
            type: int
          iops_write_max:
            description:
              - A burst rate above O(throttle_groups[].limits.iops_write) that lasts up to
                O(throttle_groups[].limits.iops_write_max_length) seconds (C(iops-write-max)).
            type: int
          iops_write_max_length:
            description:
              - Seconds a burst at O(throttle_groups[].limits.iops_write_max) may last (C(iops-
                write-max-length)); QEMU's default is 1.
            type: int
          bps_total:
            description:
              - Bytes per second, read and written together (QEMU C(bps-total)); 0 or unset is no
                limit.
            type: int
          bps_total_max:
            description:
              - A burst rate above O(throttle_groups[].limits.bps_total) that lasts up to
                O(throttle_groups[].limits.bps_total_max_length) seconds (C(bps-total-max)).
            type: int
          bps_total_max_length:
            description:
              - Seconds a burst at O(throttle_groups[].limits.bps_total_max) may last (C(bps-total-
                max-length)); QEMU's default is 1.
            type: int
          bps_read:
            description: Bytes read per second (QEMU C(bps-read)); 0 or unset is no limit.
            type: int
          bps_read_max:
            description:
              - A burst rate above O(throttle_groups[].limits.bps_read) that lasts up to
                O(throttle_groups[].limits.bps_read_max_length) seconds (C(bps-read-max)).
            type: int
          bps_read_max_length:
            description:
              - Seconds a burst at O(throttle_groups[].limits.bps_read_max) may last (C(bps-read-
                max-length)); QEMU's default is 1.
            type: int
          bps_write:
            description: Bytes written per second (QEMU C(bps-write)); 0 or unset is no limit.
            type: int
          bps_write_max:
            description:
              - A burst rate above O(throttle_groups[].limits.bps_write) that lasts up to
                O(throttle_groups[].limits.bps_write_max_length) seconds (C(bps-write-max)).
            type: int
          bps_write_max_length:
            description:
              - Seconds a burst at O(throttle_groups[].limits.bps_write_max) may last (C(bps-write-
                max-length)); QEMU's default is 1.
            type: int
          iops_size:
            description:
              - Bytes counted as one operation by the iops limits, so a larger request counts as
                several (C(iops-size)).
            type: int
  cdroms:
    description: Up to two read-only CD-ROM drives.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the drive, unique in the instance.
        type: str
        required: true
      uuid:
        description: UUID of the drive; derived when not set.
        type: str
      path:
        description:
          - Local ISO image, host CD drive, or C(http://)/C(https://) URL of an ISO (needs
            Debian's C(qemu-block-extra) on the host). Leave out for an empty drive.
        type: str
  floppy:
    description: One floppy drive.
    type: dict
    suboptions:
      name:
        description: Name of the drive.
        type: str
        default: floppy
      uuid:
        description: UUID of the drive; derived when not set.
        type: str
      path:
        description: Raw floppy image. Leave out for an empty drive.
        type: path
  nic_type:
    description: How NICs appear to the guest, unless a NIC says otherwise. C(paravirtual) is virtio-net-pci.
    type: str
    choices: [paravirtual, e1000, rtl8139]
    default: paravirtual
  pcie_root_ports:
    description:
      - q35 only. C(pcie.0) cannot hot-plug, so every PCI device (disks, NICs, the SCSI
        controller) sits in a C(pcie-root-port) of its own; this many more are created at start
        for hot-plug. Root ports cannot be hot-plugged themselves, so raising it needs a restart.
    type: int
    default: 4
  nics:
    description: The instance's network interfaces.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the NIC, unique in the instance.
        type: str
        required: true
      uuid:
        description: UUID of the NIC; its device ID is C(nic-<first three groups>). Derived when not set.
        type: str
      nic_type:
        description: Overrides O(nic_type) for this NIC.
        type: str
        choices: [paravirtual, e1000, rtl8139]
      mac:
        description: MAC address. Defaults to a stable address in C(52:54:00) derived from the NIC's UUID.
        type: str
      netdev:
        description:
          - Host side. C(user) is QEMU's user-mode network; C(tap) uses the tap interface O(nics[].ifname)
            (created beforehand); C(bridge) joins O(nics[].bridge) through C(qemu-bridge-helper).
        type: str
        choices: [user, tap, bridge]
        default: user
      ifname:
        description: Host tap interface, for O(nics[].netdev=tap).
        type: str
      bridge:
        description: Host bridge, for O(nics[].netdev=bridge).
        type: str
  allow_restart:
    description:
      - When the running instance was started with a different declaration, restart it with the
        new one. Without it such a change fails and names what differs.
      - The new declaration is checked completely before the instance is stopped; when its QEMU
        does not start, the previous declaration is started again and the task fails saying so.
    type: bool
    default: false
  purge_undeclared:
    description:
      - Disks and NICs that M(blocklayer.qemu.qemu_device) attached to the instance are kept when
        this task does not declare them, so that both modules can share an instance and a second
        run changes nothing. With O(purge_undeclared=true) they are removed like any other device
        that is not declared.
      - Devices this module declared are removed when they are no longer declared, either way.
      - The devices M(blocklayer.qemu.qemu_device) attached are kept across O(state=stopped) and
        V(running) too (read from the layout the stop recorded), and by a restart and a migration;
        those it attached with C(persistent=false) are kept only while their QEMU runs.
    type: bool
    default: false
  allow_boot_unplug:
    description:
      - Unplugging the device the running guest boots from (the one given a C(bootindex) at start -
        the first disk with O(boot_order=disk), the first NIC with O(boot_order=network)), because it
        is no longer declared, fails before anything is changed unless this is V(true). Hot-plugged
        devices have no C(bootindex), and an instance started with O(kernel_path) boots its kernel,
        not a device. A restart (O(allow_restart)) unplugs nothing and needs no confirmation.
    type: bool
    version_added: 0.3.0
    default: false
  adopt:
    description:
      - Take over a QEMU that the collection did not start (by hand, by Ganeti, by another tool)
        instead of starting one, when the instance has no runtime file yet. Its layout is read
        over QMP with read-only queries, each disk and NIC is bound to the declared one, and the
        runtime file is written; from then on the instance is managed like any other (hot-plug
        next to the found devices, hot-unplug, a no-op second run). Ignored once the instance has
        a runtime file.
      - Every disk and NIC the QEMU has must be declared, with the image path, format, mode,
        O(disks[].disk_type), MAC and O(nics[].nic_type) it has; the rest of a device's options
        are taken from the declaration. Other devices (a balloon, a CD-ROM) are left alone and
        reported in a warning.
      - The adopted QEMU keeps serving its own QMP socket; the runtime file records it.
        O(state=stopped) and O(state=absent) stop an adopted QEMU like any other, and nothing
        else ever ends it. A later start runs a new QEMU from the declaration.
      - See C(docs/migration.md), section "Adoption".
    type: dict
    suboptions:
      qmp_socket:
        description:
          - The QMP unix socket the running QEMU serves (C(-qmp unix:PATH,server=on)).
          - Required whenever O(adopt) is not empty (an empty O(adopt) adopts nothing).
        type: path
      ganeti_runtime:
        description:
          - A Ganeti KVM runtime file of this instance (any shape, Ganeti 2.9 to 3.x). Its disk and NIC
            names and UUIDs name the devices QEMU has under the Ganeti ids.
        type: path
      names:
        description:
          - QEMU device id -> the name of the declared disk or NIC it is. Without an entry, a device
            is the declared disk with the same image path, the declared NIC with the same MAC, the
            device Ganeti's runtime file names, or else the disk or NIC named after its QEMU id.
        type: dict
  unplug_timeout:
    description:
      - Seconds to wait for the guest to release unplugged devices (C(DEVICE_DELETED)). All
        unplugs of a task are requested together and awaited together.
      - A device the guest has not released by then is recorded C(unplug-pending) with its
        nodes left alone, reported in RV(unplug_pending), and removed by a later run.
    type: float
    default: 5
  start_timeout:
    description: Seconds QEMU may take to initialise.
    type: float
    default: 30
  shutdown_timeout:
    description:
      - Seconds to wait for the guest to power down after C(system_powerdown) before QEMU is
        ended with C(quit). C(0) skips the request and quits at once.
    type: float
    default: 60
  autostart:
    description:
      - Bring the instance back after a host reboot and after its QEMU died, from its runtime
        file (devices hot-plugged with M(blocklayer.qemu.qemu_device), overlays and throttle groups
        as recorded), like libvirt's C(autostart) and Proxmox's C(onboot). The role
        C(blocklayer.qemu.hypervisor) installs what does it; see the collection's C(docs/autostart.md).
      - An instance its guest shut down, or that was stopped with O(state=stopped), stays down.
      - Kept in the runtime file; changing it on a running instance changes nothing in QEMU.
    type: bool
    version_added: 0.3.0
    default: false
  autostart_order:
    description:
      - Instances with autostart start in ascending order (then by name) and stop at host
        shutdown in the reverse order, like Proxmox's C(startup order=).
    type: int
    version_added: 0.3.0
    default: 0
  autostart_delay:
    description:
      - Seconds to wait after starting this instance before the next one is started, like
        Proxmox's C(startup up=).
    type: float
    version_added: 0.3.0
    default: 0
notes:
  - QEMU is started with C(-daemonize) and keeps running after the task; its pid is in
    C(qemu.pid) in O(state_dir) and in the runtime file.
  - A QEMU of the instance is found by the QMP socket its command line serves, not only by its
    pidfile; one that neither the pidfile nor the runtime file names is reported by pid, and
    O(state=stopped) stops it.
seealso:
  - name: Ganeti design "KVM + SCSI"
    description: Device IDs, hvinfo, PCI reservations and SCSI controller types.
    link: https://docs.ganeti.org/docs/ganeti/3.0/html/design-scsi-kvm.html
"""

EXAMPLES = r"""
- name: Run a VM with a virtio disk, a SCSI disk on virtio-scsi and an installer CD
  blocklayer.qemu.qemu_instance:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    memory: 1024
    vcpus: 2
    machine_type: q35
    scsi_controller_type: virtio-scsi-pci
    disk_cache: none
    disk_aio: native
    boot_order: cdrom
    disks:
      - name: root
        path: /srv/images/web1-root.qcow2
        format: qcow2
      - name: data
        path: /srv/images/web1-data.raw
        disk_type: scsi-hd
        discard: unmap
        detect_zeroes: unmap
    cdroms:
      - name: installer
        path: /srv/iso/debian-12-netinst.iso

- name: Limit a disk's I/O, and let two disks share one budget (changes live)
  blocklayer.qemu.qemu_instance:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    throttle_groups:
      - name: shared
        limits:
          iops_total: 400
          bps_total: 52428800
    disks:
      - name: root
        path: /srv/images/web1-root.qcow2
        format: qcow2
        limits:
          iops_total: 1000
          iops_total_max: 2000
          iops_total_max_length: 10
      - name: logs
        path: /srv/images/web1-logs.raw
        throttle_group: shared
      - name: spool
        path: /srv/images/web1-spool.raw
        throttle_group: shared

- name: Shut it down (the guest gets two minutes)
  blocklayer.qemu.qemu_instance:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    state: stopped
    shutdown_timeout: 120

- name: Forget it; its images stay where they are
  blocklayer.qemu.qemu_instance:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    state: absent
"""

RETURN = r"""
state:
  description: The state the instance is in after the task.
  returned: always
  type: str
  sample: running
actions:
  description:
    - What the task did (or would do in check mode), in order.
    - Throttling changes are C(throttle) (a disk's limits or group), C(add-throttle-group),
      C(set-throttle-group) and C(delete-throttle-group) (a shared group of O(throttle_groups)).
    - A change of O(autostart), O(autostart_order) or O(autostart_delay) on a running instance is
      C(autostart), which changes only the runtime file.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "start", "devices": ["scsi", "disk-9e7c85f6-b6e5-4243"]}]
qmp_commands:
  description: Every QMP command sent, with its arguments; in check mode the ones that would be sent.
  returned: always
  type: list
  elements: dict
  sample: [{"execute": "query-block", "arguments": {}}, {"execute": "query-pci", "arguments": {}}]
pid:
  description: Process id of the running QEMU.
  returned: when running
  type: int
  sample: 12345
qmp_socket:
  description: Path of the instance's QMP unix socket.
  returned: when running
  type: str
  sample: /var/lib/blocklayer-qemu/web1/qmp.sock
runtime_file:
  description: Path of the runtime file.
  returned: when running
  type: str
  sample: /var/lib/blocklayer-qemu/web1/runtime.json
devices:
  description: Device id -> hvinfo (driver, id, bus, addr or channel/scsi-id/lun or unit, drive).
  returned: always
  type: dict
  sample:
    disk-9e7c85f6-b6e5-4243:
      driver: virtio-blk-pci
      id: disk-9e7c85f6-b6e5-4243
      bus: pci.0
      addr: "0xc"
      drive: disk-9e7c85f6-b6e5-4243.fmt
argv:
  description: The QEMU command line the instance runs with.
  returned: when running
  type: list
  elements: str
accel:
  description: The accelerator in use, C(kvm) or C(tcg).
  returned: when running
  type: str
  sample: tcg
unplug_pending:
  description: Ids of devices whose unplug the guest has not completed yet; a later run finishes them.
  returned: always
  type: list
  elements: str
  sample: []
qemu_version:
  description: The version QEMU answers on QMP.
  returned: when running
  type: str
  sample: 7.2.22
qemu_error:
  description:
    - On a failure QEMU reported over QMP, QEMU's own description of the error (the C(desc) of its
      error reply), for a task that handles one error of QEMU's differently (C(failed_when)).
    - Empty when the failure was not a QMP error reply (bad input, a QEMU that exited or did not
      start); not returned for an internal error of the collection.
  returned: failure
  type: str
  sample: "Duplicate nodes with node-name='disk-9e7c85f6-b6e5-4243.fmt'"
qemu_error_class:
  description:
    - On a failure QEMU reported over QMP, the C(class) of its error reply, for example
      C(GenericError) or C(DeviceNotFound).
    - Empty when the failure was not a QMP error reply; not returned for an internal error of the
      collection.
  returned: failure
  type: str
  sample: GenericError
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

# First of the collection's: under Ansible the others then load compiled (docs/design.md "Speed").
from ansible_collections.blocklayer.qemu.plugins.module_utils import bytecode  # noqa: E402,F401 pylint: disable=unused-import
from ansible_collections.blocklayer.qemu.plugins.module_utils import args, cache, ids, plan, spec  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.module_utils.instance import resolve_binary  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.module_utils.task import Task  # noqa: E402

ARGUMENT_SPEC = dict(
    args.INSTANCE_OPTIONS,
    state=dict(type="str", choices=["running", "stopped", "absent"], default="running"),
    uuid=dict(type="str"),
    qemu_binary=dict(type="str", default="qemu-system-x86_64"),
    qemu_firmware_dirs=dict(type="list", elements="path"),
    qemu_module_dir=dict(type="path"),
    memory=dict(type="int", default=256),
    vcpus=dict(type="int", default=1),
    cpu_model=dict(type="str"),
    machine_type=dict(type="str", choices=list(spec.MACHINE_TYPES), default="pc"),
    accel=dict(type="str", choices=list(spec.ACCELS), default="auto"),
    kernel_path=dict(type="path"),
    initrd_path=dict(type="path"),
    kernel_args=dict(type="str"),
    agent_channel=dict(type="bool", default=False),
    disk_type=dict(type="str", choices=list(spec.DISK_TYPES), default="paravirtual"),
    scsi_controller_type=dict(type="str", choices=list(spec.SCSI_CONTROLLER_TYPES), default="lsi"),
    scsi_iothread=dict(type="bool", default=False),
    kvm_pci_reservations=dict(type="int", default=12),
    disk_cache=dict(type="str", choices=list(cache.CACHE_MODES), default="default"),
    disk_aio=dict(type="str", choices=list(cache.AIO_MODES), default="threads"),
    disk_discard=dict(type="str", choices=list(cache.DISCARD_MODES), default="ignore"),
    disk_detect_zeroes=dict(type="str", choices=list(cache.DETECT_ZEROES_MODES), default="off"),
    cdrom_disk_type=dict(type="str", choices=list(spec.CDROM_DISK_TYPES), default="ide"),
    boot_order=dict(type="str", choices=list(spec.BOOT_ORDERS), default="disk"),
    disks=dict(type="list", elements="dict", default=[], options=args.DISK_OPTIONS),
    throttle_groups=dict(type="list", elements="dict", default=[], options=args.THROTTLE_GROUP_OPTIONS),
    cdroms=dict(type="list", elements="dict", default=[], options=args.CDROM_OPTIONS),
    floppy=dict(type="dict", options=args.FLOPPY_OPTIONS),
    nic_type=dict(type="str", choices=list(spec.NIC_TYPES), default="paravirtual"),
    pcie_root_ports=dict(type="int", default=4),
    nics=dict(type="list", elements="dict", default=[], options=args.NIC_OPTIONS),
    allow_restart=dict(type="bool", default=False),
    purge_undeclared=dict(type="bool", default=False),
    adopt=dict(type="dict", options=dict(qmp_socket=dict(type="path"),
                                         ganeti_runtime=dict(type="path"), names=dict(type="dict"))),
    **args.LIVE_OPTIONS,
    start_timeout=args.START_TIMEOUT,
    shutdown_timeout=args.SHUTDOWN_TIMEOUT,
    autostart=dict(type="bool", default=False),
    autostart_order=dict(type="int", default=0),
    autostart_delay=dict(type="float", default=0.0),
)


def _supported_aio(params):
    """Ask the binary's QMP schema only when io_uring is asked for (it is build-conditional)."""
    wanted = [params["disk_aio"]] + [d.get("aio") for d in params["disks"]]
    if "io_uring" not in wanted:
        return cache.AIO_MODES
    from ansible_collections.blocklayer.qemu.plugins.module_utils import host, probe
    binary = resolve_binary(params["qemu_binary"])
    firmware_dirs, module_dir = host.qemu_dirs(binary, params["qemu_firmware_dirs"], params["qemu_module_dir"])
    env = dict(os.environ, QEMU_MODULE_DIR=module_dir) if module_dir else None
    return probe.aio_modes(probe.query_schema(binary, env, firmware_dirs))


def converge(task: Task) -> dict:
    params = task.module.params
    uuid = ids.canonical_uuid(params["uuid"], "uuid") if params["uuid"] else ids.instance_uuid(params["name"])
    if params["state"] == "running":
        args.check_paths(ARGUMENT_SPEC, params)
    instance = task.open_instance(uuid)
    if params["state"] != "running":
        return instance.ensure_stopped() if params["state"] == "stopped" else instance.ensure_absent()
    if not params["purge_undeclared"]:
        # What qemu_device attached stays unless the play asks to purge it (docs/design.md), also
        # when the instance starts again from the layout a stop recorded (``before``, not ``rt``).
        kept = plan.kept_devices(instance.before.layout if instance.before else None, params,
                                 running=instance.pid is not None)
        params = dict(params, disks=params["disks"] + kept["disks"], nics=params["nics"] + kept["nics"])
    instance_spec = spec.instance_from(params, _supported_aio(params))
    adopt = {key: value for key, value in (params["adopt"] or {}).items() if value}
    if adopt:
        instance.adopt(instance_spec, adopt)  # a QEMU someone else started (docs/migration.md)
    return instance.ensure_running(instance_spec, params["allow_restart"], params["qemu_firmware_dirs"],
                                   params["qemu_module_dir"], allow_boot_unplug=params["allow_boot_unplug"])


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    Task(module).run(converge, create_state_dir=module.params["state"] == "running")


if __name__ == "__main__":
    main()
