#!/bin/sh
# /init of the blocklayer.qemu test guest (busybox ash, PID 1).
#
# Boots, loads the storage drivers that the hardware present needs, then runs a
# line-based agent on /dev/ttyS1 (the console, with kernel messages, is ttyS0).
# Agent protocol: on start it prints "READY" once. Each request is one line; each
# reply is zero or more data lines, then "OK" or "ERR <message>". Data lines are
# "key=value ..." with values percent-encoded (space, %, =, and control bytes).
# See tools/guest/README.md for the commands; tools/guest/agent.py speaks it.
#
# Invoked as /sbin/hotplug (by busybox uevent) it handles one kernel uevent.

export PATH=/sbin:/bin:/usr/sbin:/usr/bin
AGENT_TTY=/dev/ttyS1
EVENTS=/run/uevents.fifo
WAITING=/run/waiting

# ---------------------------------------------------------------- uevent helper
if [ "${0##*/}" = hotplug ]; then
    # Load the driver for a new device (a hot-plugged controller, a disk on it) and
    # wake an agent waiting for block devices to come or go.
    if [ "$ACTION" = add ] && [ -n "$MODALIAS" ]; then
        modprobe -q "$MODALIAS" 2>/dev/null
    fi
    if [ "$SUBSYSTEM" = block ] && [ -e "$WAITING" ]; then
        echo "$ACTION ${DEVNAME:-$DEVPATH}" >"$EVENTS"
    fi
    exit 0
fi

# ---------------------------------------------------------------- boot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /mnt
echo /sbin/modprobe >/proc/sys/kernel/modprobe
ln -sf /init /sbin/hotplug
mkfifo "$EVENTS"

boot_log() { echo "guest-init: $*" >/dev/console; }

modaliases() {
    # modaliases GLOB: the modalias of every device matching the sysfs glob
    for f in $1; do
        [ -r "$f" ] && read -r a <"$f" && echo "$a"
    done
}

read -r up _ </proc/uptime
boot_log "loading drivers at ${up}s"
# Linux reads no VPD pages of QEMU's CD-ROMs unless told to (BLIST_TRY_VPD_PAGES);
# page 0x80 carries a scsi-cd's serial. scsi_mod is needed anyway (libata, every HBA).
# (busybox modprobe cannot pass a quoted parameter value; insmod can.)
kmod=/lib/modules/$(uname -r)/kernel/drivers/scsi
insmod "$kmod/scsi_common.ko"
insmod "$kmod/scsi_mod.ko" 'dev_flags="QEMU:QEMU CD-ROM:0x10000000"'
# sd_mod (via t10-pi) needs crc-t10dif/crc64-rocksoft, which need these crypto back-ends.
modprobe -a crct10dif_generic crc64_rocksoft_generic
# Coldplug, bus by bus, each after the drivers that create its devices (module loading
# waits for the asynchronous probes and SCSI scans those drivers start):
# PCI: virtio_pci, ahci, ata_piix, nvme, and the slow HBA drivers only when their HBA
# is there (sym53c8xx resets the SCSI bus: ~4 s under TCG; megaraid_sas).
# shellcheck disable=SC2046
modprobe -qa $(modaliases '/sys/bus/pci/devices/*/modalias')
# virtio: virtio_blk, virtio_scsi, virtio_net.
# shellcheck disable=SC2046
modprobe -qa $(modaliases '/sys/bus/virtio/devices/*/modalias')
# SCSI devices: sd_mod, sr_mod.
# shellcheck disable=SC2046
modprobe -qa $(modaliases '/sys/bus/scsi/devices/*/modalias')
# The floppy controller is an ISA/ACPI device (PNP0700), present on every pc: load
# floppy only when the CMOS (register 0x10: drive types) says a drive is attached.
floppy_drives() {
    [ -c /dev/port ] || { echo 1; return; }
    printf '\020' | dd of=/dev/port bs=1 seek=112 count=1 2>/dev/null
    v=$(dd if=/dev/port bs=1 skip=113 count=1 2>/dev/null | od -An -tu1)
    echo $((${v:-1}))
}
for f in /sys/bus/acpi/devices/PNP0700:*; do
    [ -e "$f" ] && [ "$(floppy_drives)" != 0 ] && modprobe -q floppy
    break
done
# From now on, hot-plugged devices get their drivers from uevents (see the top).
uevent /sbin/hotplug </dev/null >/dev/null 2>&1 &
read -r up _ </proc/uptime
boot_log "drivers loaded at ${up}s"

# ---------------------------------------------------------------- agent helpers
set -f          # no globbing of request words
CR=$(printf '\r')
ERRMSG=

fail() { ERRMSG="$*"; return 1; }

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; esac; }

# chr HEX: the byte with that value.
chr() {
    # shellcheck disable=SC2059
    printf "\\$(printf %03o "0x$1")"
}

# set_enc NAME VALUE: NAME=VALUE with leading/trailing blanks trimmed, control
# characters dropped, and space, % and = percent-encoded. No subshell (forks are slow
# under TCG) unless VALUE has control characters.
set_enc() {
    v=$2
    v=${v#"${v%%[! 	]*}"}
    v=${v%"${v##*[! 	]}"}
    # shellcheck disable=SC3060  # busybox ash has ${v//x/y}
    case $v in
    *[!A-Za-z0-9._:/,+@-]*)
        case $v in *[[:cntrl:]]*) v=$(printf '%s' "$v" | tr -d '\000-\037\177') ;; esac
        v=${v//\%/%25}
        v=${v// /%20}
        v=${v//=/%3D}
        ;;
    esac
    eval "$1=\$v"
}

# readvar NAME FILE: NAME=first line of FILE, or empty.
readvar() {
    v=''
    [ -r "$2" ] && { IFS= read -r v <"$2" || :; }
    eval "$1=\$v"
}

now_ms() {
    read -r u _ </proc/uptime
    f=${u#*.}
    echo $((${u%.*} * 1000 + ${f#0} * 10))
}

check_dev() {
    case $1 in '' | *[!A-Za-z0-9]*) fail "bad device name: $1"; return ;; esac
    [ -b "/dev/$1" ] || fail "no block device /dev/$1"
}

# ---------------------------------------------------------------- agent commands
cmd_ping() {
    [ -n "$1" ] && echo "pong $1"
    return 0
}

cmd_uptime() {
    read -r u _ </proc/uptime
    echo "uptime=$u"
}

# ata_id_serial FILE: the serial number (IDENTIFY words 10-19) from a libata
# ata_device "id" attribute (256 hex words).
ata_id_serial() {
    [ -r "$1" ] || return 0
    # shellcheck disable=SC2046
    set -- $(cat "$1")
    [ $# -ge 20 ] || return 0
    shift 10
    i=0
    for w in "$@"; do
        [ $i -lt 10 ] || break
        i=$((i + 1))
        for b in "${w%??}" "${w#??}"; do
            [ "$b" = 00 ] || chr "$b"
        done
    done
}

disk_line() {
    d=$1
    n=${d##*/}
    readvar sz "$d/size"
    size=$((${sz:-0} * 512))
    readvar ro "$d/ro"
    readvar rmv "$d/removable"
    link=$(readlink "$d")
    bus=other serial='' hctl='' driver='' model=''
    case $n in
    vd*)
        bus=virtio
        readvar serial "$d/serial"
        driver=virtio_blk
        ;;
    nvme*)
        bus=nvme
        readvar serial "$d/device/serial"
        readvar model "$d/device/model"
        driver=nvme
        ;;
    fd*)
        bus=floppy
        driver=floppy
        # The floppy driver sizes the medium when the device is opened.
        size=$(blockdev --getsize64 "/dev/$n" 2>/dev/null) || size=0
        ;;
    *)
        if [ -d "$d/device/scsi_device" ]; then
            bus=scsi
            case $link in */ata[0-9]*) bus=ata ;; esac
            set +f
            for x in "$d"/device/scsi_device/*; do hctl=${x##*/}; done
            set -f
            readvar driver "/sys/class/scsi_host/host${hctl%%:*}/proc_name"
            readvar model "$d/device/model"
            if [ -r "$d/device/vpd_pg80" ]; then
                # Unit Serial Number VPD page: 4-byte header, then the serial.
                serial=$(tail -c +5 "$d/device/vpd_pg80" | tr -d '\000')
            elif [ $bus = ata ]; then
                # ATAPI (ide-cd) has no page 0x80: take IDENTIFY words 10-19.
                port=${link%%/host*}
                port=${port##*/ata}
                t=${hctl#*:*:}
                serial=$(ata_id_serial "/sys/class/ata_device/dev$port.${t%%:*}/id")
            fi
        fi
        ;;
    esac
    set_enc serial "$serial"
    set_enc model "$model"
    set_enc driver "$driver"
    echo "name=$n size=$size bus=$bus serial=$serial hctl=$hctl driver=$driver" \
        "ro=${ro:-0} removable=${rmv:-0} model=$model"
}

cmd_disks() {
    set +f
    for d in /sys/block/*; do
        case ${d##*/} in loop* | ram* | zram* | nbd* | dm-* | md*) continue ;; esac
        [ -e "$d" ] && disk_line "$d"
    done
    set -f
    return 0
}

cmd_write() {
    dev=$1 off=$2 len=$3 byte=$4
    [ $# -eq 4 ] || { fail "usage: write DEV OFFSET LENGTH BYTE"; return; }
    check_dev "$dev" || return
    if ! is_uint "$off" || ! is_uint "$len" || ! is_uint "$byte" || [ "$byte" -gt 255 ]; then
        fail "bad number in: $*"
        return
    fi
    [ "$len" -gt 0 ] || { fail "length must be > 0"; return; }
    if [ "$byte" -eq 0 ]; then
        src=/dev/zero chunk=$len
    else
        # A pattern file, doubled up to 4 MiB (tr is slow under TCG), written repeatedly.
        src=/tmp/pattern chunk=$((len < 65536 ? len : 65536))
        head -c "$chunk" /dev/zero | tr '\000' "\\$(printf '%03o' "$byte")" >"$src"
        while [ "$chunk" -lt "$len" ] && [ "$chunk" -lt 4194304 ]; do
            cat "$src" "$src" >"$src.2" && mv "$src.2" "$src"
            chunk=$((chunk * 2))
        done
    fi
    done_=0
    while [ "$done_" -lt "$len" ]; do
        n=$((len - done_ < chunk ? len - done_ : chunk))
        if ! err=$(dd if="$src" of="/dev/$dev" bs=65536 count="$n" iflag=count_bytes \
            seek=$((off + done_)) oflag=seek_bytes conv=notrunc,fsync 2>&1); then
            rm -f /tmp/pattern
            fail "write /dev/$dev: $(echo "$err" | grep -v records | head -n 1)"
            return
        fi
        done_=$((done_ + n))
    done
    rm -f /tmp/pattern
    echo "written=$len"
}

# read_to_tmp DEV OFF LEN: copy the bytes, bypassing stale page cache, to /tmp/rd.
read_to_tmp() {
    blockdev --flushbufs "/dev/$1" 2>/dev/null
    if ! err=$(dd if="/dev/$1" of=/tmp/rd bs=65536 skip="$2" count="$3" \
        iflag=skip_bytes,count_bytes 2>&1); then
        fail "read /dev/$1: $(echo "$err" | grep -v records | head -n 1)"
        return
    fi
    got=$(wc -c </tmp/rd)
    [ "$got" -eq "$3" ] || fail "short read from /dev/$1: $got of $3 bytes"
}

cmd_read() {
    dev=$1 off=$2 len=$3
    [ $# -eq 3 ] || { fail "usage: read DEV OFFSET LENGTH"; return; }
    check_dev "$dev" || return
    if ! is_uint "$off" || ! is_uint "$len"; then fail "bad number in: $*"; return; fi
    [ "$len" -gt 0 ] || { fail "length must be > 0"; return; }
    read_to_tmp "$dev" "$off" "$len" || { rm -f /tmp/rd; return 1; }
    sum=$(md5sum </tmp/rd)
    first=$(od -An -tu1 -N1 /tmp/rd)
    first=${first##* }
    rest=$(tr -d "\\$(printf '%03o' "$first")" </tmp/rd | wc -c)
    rm -f /tmp/rd
    uniform=0
    [ "$rest" -eq 0 ] && uniform=1
    echo "length=$len md5=${sum%% *} first=$first uniform=$uniform"
}

cmd_rescan() {
    set +f
    for h in /sys/class/scsi_host/host*; do
        [ -e "$h/scan" ] || continue
        # libata hosts reset their ports on a wildcard scan, and find new devices anyway.
        case $(readlink "$h") in */ata[0-9]*) continue ;; esac
        echo "- - -" >"$h/scan" 2>/dev/null && echo "scanned=${h##*/}"
    done
    # HBAs that do not report hot-unplug (lsi, megasas) leave stale disks: probe each
    # SCSI disk with one direct read, and delete the ones that fail.
    for d in /sys/block/sd*; do
        [ -e "$d/device/delete" ] || continue
        case $(readlink "$d") in */ata[0-9]*) continue ;; esac
        n=${d##*/}
        if ! dd if="/dev/$n" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; then
            echo 1 >"$d/device/delete" && echo "deleted=$n"
        fi
    done
    set -f
    return 0
}

cmd_label() {
    dev=$1
    [ $# -eq 1 ] || { fail "usage: label DEV"; return; }
    check_dev "$dev" || return
    # ide-cd answers the first read after a media change with an I/O error: retry once.
    read_to_tmp "$dev" 32768 2048 || read_to_tmp "$dev" 32768 2048 ||
        { rm -f /tmp/rd; return 1; }
    magic=$(dd if=/tmp/rd bs=1 skip=1 count=5 2>/dev/null)
    lab=$(dd if=/tmp/rd bs=1 skip=40 count=32 2>/dev/null | tr -d '\000')
    rm -f /tmp/rd
    [ "$magic" = CD001 ] || { fail "/dev/$dev has no ISO 9660 volume descriptor"; return; }
    set_enc lab "$lab"
    echo "label=$lab"
}

cmd_cat() {
    dev=$1 path=$2
    [ $# -eq 2 ] || { fail "usage: cat DEV PATH"; return; }
    check_dev "$dev" || return
    case $path in *..* | '') fail "bad path: $path"; return ;; esac
    mnt=/mnt/$dev
    mkdir -p "$mnt"
    modprobe -q isofs
    if ! err=$(mount -o ro "/dev/$dev" "$mnt" 2>&1); then
        err2=$(mount -o ro "/dev/$dev" "$mnt" 2>&1) || { fail "mount /dev/$dev: $err $err2"; return; }
    fi
    f=$mnt/${path#/}
    if [ -f "$f" ]; then
        echo "size=$(wc -c <"$f") data=$(base64 -w 0 "$f")"
        st=0
    else
        fail "no file $path on /dev/$dev"
        st=1
    fi
    umount "$mnt"
    return $st
}

cmd_wait() {
    # wait DEV present|absent TIMEOUT_S: until /sys/block/DEV appears or goes.
    dev=$1 want=$2 tmo=$3
    [ $# -eq 3 ] || { fail "usage: wait DEV present|absent TIMEOUT_SECONDS"; return; }
    case $dev in '' | *[!A-Za-z0-9]*) fail "bad device name: $dev"; return ;; esac
    case $want in present | absent) ;; *) fail "bad state: $want"; return ;; esac
    is_uint "$tmo" || { fail "bad timeout: $tmo"; return; }
    : >"$WAITING"
    deadline=$(($(now_ms) + tmo * 1000))
    st=1
    while :; do
        if [ -e "/sys/block/$dev" ]; then
            [ "$want" = present ] && st=0 && break
        else
            [ "$want" = absent ] && st=0 && break
        fi
        left=$((deadline - $(now_ms)))
        [ "$left" -gt 0 ] || break
        # Woken by the uevent helper on any block event; the timeout bounds the wait.
        # shellcheck disable=SC3045  # busybox ash has read -t
        read -r -t "$((left / 1000)).$(printf '%03d' $((left % 1000)))" _ <&3
    done
    rm -f "$WAITING"
    [ $st -eq 0 ] || { fail "timeout: $dev not $want after ${tmo}s"; return; }
    read -r u _ </proc/uptime
    echo "uptime=$u"
}

cmd_run() {
    # run SHELL-COMMAND...: for debugging; each output line comes back as "| LINE".
    [ $# -gt 0 ] || { fail "usage: run COMMAND..."; return; }
    set +f
    out=$(eval "$*" 2>&1)
    st=$?
    set -f
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/| /'
    [ $st -eq 0 ] || fail "exit status $st"
}

cmd_poweroff() {
    echo OK
    sync
    poweroff -f
    fail "poweroff failed"
}

# ---------------------------------------------------------------- agent loop
agent() {
    exec 3<>"$EVENTS"
    # One open of the port, then raw/no echo at once: bytes that came in while it was
    # still cooked may have been echoed, which is why READY starts on a fresh line.
    exec 0<>"$AGENT_TTY"
    stty raw -echo -echoe -echok -echoctl -echoke -ixon -ixoff 2>/dev/console
    exec 1>&0 2>/dev/console
    printf '\nREADY\n'
    while :; do
        IFS= read -r line || { boot_log "agent: EOF on $AGENT_TTY"; return 1; }
        line=${line%"$CR"}
        # shellcheck disable=SC2086
        set -- $line
        [ $# -gt 0 ] || continue
        cmd=$1
        shift
        ERRMSG=
        case $cmd in
        ping | uptime | disks | write | read | rescan | label | cat | wait | run | poweroff)
            if "cmd_$cmd" "$@"; then
                echo OK
            else
                echo "ERR $(printf '%s' "${ERRMSG:-$cmd failed}" | tr '\r\n' '  ')"
            fi
            ;;
        *)
            echo "ERR unknown command: $(printf '%s' "$cmd" | tr -cd '[:print:]' | head -c 40)"
            ;;
        esac
    done
}

read -r up _ </proc/uptime
boot_log "agent starting on $AGENT_TTY at ${up}s"
while :; do
    agent
    boot_log "agent exited; restarting"
done
