#!/usr/bin/env bash
# Fetches a second QEMU generation, beside the system's, from Debian's backports suite of this
# machine's release into a private prefix build/qemu-<major>.<minor>/root. Which one follows
# from VERSION_CODENAME in /etc/os-release:
#
#   bookworm (Debian 12): system QEMU 7.2,  other: 10.0.2 from bookworm-backports -> build/qemu-10.0
#   trixie   (Debian 13): system QEMU 10.0, other: 11.1.3 from trixie-backports   -> build/qemu-11.1
#
# Each backports build links only libraries of its own release, so they are already installed
# with the system QEMU (an older generation, e.g. bookworm's 7.2 on trixie, would need
# libfuse3-3 and libcapstone4, which trixie does not have). Run from anywhere as
#   bash tools/fetch-qemu-other.sh
# (FETCH_QEMU_CODENAME=<codename> overrides /etc/os-release, for trying the table out.)
#
# How: a separate apt configuration under build/qemu-<gen>/apt/ (its own sources file,
# lists and cache directories) whose single source is <system Debian mirror> <codename>-backports,
# with the mirror URL and Signed-By/Trusted taken from the system's existing Debian "<codename>"
# entry (deb822 .sources or one-line .list).
# The .debs are fetched with `apt-get download PKG=VERSION` and unpacked with `dpkg -x`.
# Nothing is installed: the system's apt sources, dpkg database and QEMU stay untouched.
#
# Running it again is a no-op (one line, no network) while the binary exists and the
# stamp records the same package versions. At the end of a fetch it checks that the
# binary reports the pinned version and answers query-version over QMP.
#
# Use the result with:
#   P=build/qemu-<gen>/root
#   QEMU_MODULE_DIR=$P/usr/lib/x86_64-linux-gnu/qemu $P/usr/bin/qemu-system-x86_64 \
#     -L $P/usr/share/qemu -L $P/usr/share/seabios ...
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

die() { echo "fetch-qemu-other: ERROR: $*" >&2; exit 1; }
say() { echo "fetch-qemu-other: $*"; }

codename=${FETCH_QEMU_CODENAME:-$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d "\"'")}
case $codename in
  bookworm)
    QEMU_VERSION='1:10.0.2+ds-2+deb13u1~bpo12+1'
    SEABIOS_VERSION='1.16.3-2~bpo12+1'
    ;;
  trixie)
    QEMU_VERSION='1:11.1.3+ds-2~bpo13+1'
    SEABIOS_VERSION='1.17.0-1~bpo13+1'
    ;;
  *)
    die "no second QEMU generation is known for Debian '${codename:-unknown}' (/etc/os-release VERSION_CODENAME); this script knows bookworm and trixie"
    ;;
esac
BASE_SUITE=$codename
SUITE=$BASE_SUITE-backports
# 1:10.0.2+ds-2+deb13u1~bpo12+1 -> 10.0.2 (what the binary reports) and 10.0 (the directory)
QEMU_UPSTREAM=${QEMU_VERSION#*:}
QEMU_UPSTREAM=${QEMU_UPSTREAM%%[+~-]*}
QEMU_GEN=${QEMU_UPSTREAM%.*}
PACKAGES=(
  "qemu-system-x86=$QEMU_VERSION"
  "qemu-system-common=$QEMU_VERSION"
  "qemu-system-data=$QEMU_VERSION"
  "qemu-utils=$QEMU_VERSION"
  "qemu-block-extra=$QEMU_VERSION"
  "seabios=$SEABIOS_VERSION"
)

B=build/qemu-$QEMU_GEN
P=$repo/$B/root
QEMU=$P/usr/bin/qemu-system-x86_64
MODDIR=$P/usr/lib/x86_64-linux-gnu/qemu
stamp=$repo/$B/stamp
want_stamp=$(printf '%s\n' "${PACKAGES[@]}")

present() {
  [[ -x $QEMU && -f $stamp && "$(<"$stamp")" == "$want_stamp" ]]
}
if present; then
  say "QEMU ${QEMU_VERSION} is present in $B/root (nothing to do)"
  exit 0
fi

start=$(date +%s.%N)

mkdir -p "$B"
exec 9>"$B/.lock"
flock 9
if present; then  # another run finished while we waited for the lock
  say "QEMU ${QEMU_VERSION} is present in $B/root (nothing to do)"
  exit 0
fi
rm -f "$stamp"

py=$repo/.venv/bin/python
[[ -x $py ]] || die "$py is missing; run tools/setup.sh first (the QMP check uses its qemu.qmp)"
for tool in apt-get apt-cache apt-config dpkg-deb sha256sum flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found; this script needs Debian's apt/dpkg tools"
done

# --- 1. A private apt configuration, derived from the system's Debian entry -----------

# Prints a deb822 stanza for $SUITE built from the first enabled "deb" entry for
# $BASE_SUITE with component main. One-line format: deb [opts] URI SUITE COMPONENTS...
# shellcheck disable=SC2016  # awk programs, expanded by awk
awk_list='
  { sub(/#.*/, "") }
  $1 != "deb" { next }
  {
    line = $0; opts = ""
    if (match(line, /\[[^]]*\]/)) {
      opts = substr(line, RSTART + 1, RLENGTH - 2)
      line = substr(line, 1, RSTART - 1) " " substr(line, RSTART + RLENGTH)
    }
    n = split(line, f, /[ \t]+/); k = 0
    for (i = 1; i <= n; i++) if (f[i] != "") w[++k] = f[i]
    if (k < 4 || w[3] != base || w[2] ~ /^cdrom:/) next
    main = 0
    for (i = 4; i <= k; i++) if (w[i] == "main") main = 1
    if (!main) next
    signed = ""; trusted = ""
    m = split(opts, o, /[ \t]+/)
    for (i = 1; i <= m; i++) {
      if (o[i] ~ /^signed-by=/) signed = substr(o[i], 11)
      if (o[i] ~ /^trusted=/) trusted = substr(o[i], 9)
    }
    print "# derived from " FILENAME ":" FNR
    print "Types: deb"; print "URIs: " w[2]; print "Suites: " suite; print "Components: main"
    if (signed != "") print "Signed-By: " signed
    if (trusted != "") print "Trusted: " trusted
    found = 1; exit
  }
  END { exit !found }'

# deb822: stanzas separated by blank lines; continuation lines start with white space
# (Signed-By may hold an inline key, which is carried over verbatim).
# shellcheck disable=SC2016
awk_sources='
  function flush(   i, n, t, s, c, u, okt, oks, okc) {
    if (nf == 0) return
    okt = oks = okc = 0
    n = split(val["types"], t, /[ \t\n]+/);      for (i = 1; i <= n; i++) if (t[i] == "deb") okt = 1
    n = split(val["suites"], s, /[ \t\n]+/);     for (i = 1; i <= n; i++) if (s[i] == base) oks = 1
    n = split(val["components"], c, /[ \t\n]+/); for (i = 1; i <= n; i++) if (c[i] == "main") okc = 1
    split(val["uris"], u, /[ \t\n]+/); uri = u[1]; if (uri == "") uri = u[2]
    if (okt && oks && okc && tolower(val["enabled"]) != "no" && uri != "" && uri !~ /^cdrom:/) {
      print "# derived from " FILENAME
      print "Types: deb"; print "URIs: " uri; print "Suites: " suite; print "Components: main"
      if (raw["signed-by"] != "") print raw["signed-by"]
      if (raw["trusted"] != "") print raw["trusted"]
      found = 1; exit
    }
    delete val; delete raw; nf = 0; cur = ""
  }
  /^#/ { next }
  /^[ \t]*$/ { flush(); next }
  /^[ \t]/ { if (cur != "") { val[cur] = val[cur] "\n" $0; raw[cur] = raw[cur] "\n" $0 } next }
  {
    i = index($0, ":"); if (i == 0) next
    cur = tolower(substr($0, 1, i - 1)); v = substr($0, i + 1); sub(/^[ \t]+/, "", v)
    val[cur] = v; raw[cur] = $0; nf++
  }
  END { if (!found) flush(); exit !found }'

SL='' SP=''
eval "$(apt-config shell SL Dir::Etc::SourceList/f SP Dir::Etc::SourceParts/d)"
candidates=()
[[ -n $SL && -f $SL ]] && candidates+=("$SL")
if [[ -n $SP && -d $SP ]]; then
  for f in "${SP%/}"/*.list "${SP%/}"/*.sources; do [[ -f $f ]] && candidates+=("$f"); done
fi
stanza=
for f in "${candidates[@]}"; do
  case $f in
    *.sources) prog=$awk_sources ;;
    *) prog=$awk_list ;;
  esac
  if stanza=$(awk -v base="$BASE_SUITE" -v suite="$SUITE" "$prog" "$f"); then break; fi
  stanza=
done
searched=${candidates[*]:-"(no apt source files found)"}
[[ -n $stanza ]] || die "no enabled 'deb' entry for suite '$BASE_SUITE' (component main) in $searched; cannot tell which Debian mirror to use"
mirror=$(sed -n 's/^URIs: //p' <<<"$stanza")

A=$repo/$B/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$repo/$B/debs"
printf '%s\n' "$stanza" >"$A/backports.sources"
apt_opts=(
  -o "Dir::Etc::SourceList=$A/backports.sources"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$A/lists"
  -o "Dir::Cache=$A/cache"
)
if [[ $(id -u) == 0 ]]; then apt_opts+=(-o APT::Sandbox::User=root); fi

say "updating the private package lists for $SUITE from $mirror"
if ! apt-get "${apt_opts[@]}" --error-on=any -q update >"$A/update.log" 2>&1; then
  sed 's/^/  /' "$A/update.log" >&2
  die "apt-get update of $mirror $SUITE failed (configuration: $A/backports.sources)"
fi

# --- 2. Resolve the exact versions and fetch what is not already downloaded ---------
declare -A deb_file deb_sha
to_fetch=()
errors=0
for spec in "${PACKAGES[@]}"; do
  pkg=${spec%%=*} ver=${spec#*=}
  if ! info=$(apt-cache "${apt_opts[@]}" show "$spec" 2>/dev/null) || [[ -z $info ]]; then
    served=$(apt-cache "${apt_opts[@]}" madison "$pkg" 2>/dev/null | awk -F' [|] ' '/Packages/ {printf "%s%s", s, $2; s=", "}')
    echo "fetch-qemu-other: ERROR: cannot fetch $pkg version $ver: $mirror $SUITE serves ${served:-no version of $pkg}" >&2
    errors=$((errors + 1)); continue
  fi
  info=$(awk 'NF == 0 {exit} {print}' <<<"$info")  # first record only
  arch=$(sed -n 's/^Architecture: //p' <<<"$info")
  deb_sha[$pkg]=$(sed -n 's/^SHA256: //p' <<<"$info")
  deb_file[$pkg]=$repo/$B/debs/${pkg}_${ver//:/%3a}_$arch.deb
  if [[ -f ${deb_file[$pkg]} ]] && sha256sum "${deb_file[$pkg]}" | grep -q "^${deb_sha[$pkg]} "; then
    continue
  fi
  rm -f "${deb_file[$pkg]}"
  to_fetch+=("$spec")
done
((errors == 0)) || die "$errors package(s) not available at the pinned version; edit the versions at the top of $0 if the suite moved on"

if ((${#to_fetch[@]})); then
  say "downloading ${to_fetch[*]}"
  if ! (cd "$B/debs" && apt-get "${apt_opts[@]}" -q download "${to_fetch[@]}") >"$A/download.log" 2>&1; then
    sed 's/^/  /' "$A/download.log" >&2
    die "apt-get download failed for: ${to_fetch[*]}"
  fi
fi
for spec in "${PACKAGES[@]}"; do
  pkg=${spec%%=*} ver=${spec#*=}
  f=${deb_file[$pkg]}
  [[ -f $f ]] || die "$pkg $ver: apt-get download did not produce $f"
  sha256sum "$f" | grep -q "^${deb_sha[$pkg]} " || die "$pkg $ver: $f does not match the SHA256 in the signed index"
  # shellcheck disable=SC2016
  got=$(dpkg-deb --show --showformat='${Package} ${Version}' "$f")
  [[ $got == "$pkg $ver" ]] || die "$f contains '$got', expected '$pkg $ver'"
done

# --- 3. Unpack into the private prefix (never dpkg -i) ------------------------------
say "unpacking into $B/root"
rm -rf "$P.new" "$P.old"
mkdir -p "$P.new"
for spec in "${PACKAGES[@]}"; do
  dpkg-deb -x "${deb_file[${spec%%=*}]}" "$P.new" || die "dpkg-deb -x ${deb_file[${spec%%=*}]} failed"
done
[[ -e $P ]] && mv "$P" "$P.old"
mv "$P.new" "$P"
rm -rf "$P.old"

# Libraries: everything the backports build links is in $BASE_SUITE, but it has to be installed.
missing=$(ldd "$QEMU" "$P/usr/bin/qemu-img" 2>/dev/null | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
[[ -z $missing ]] || die "shared libraries missing on this system for qemu-system-x86_64/qemu-img: $missing(install them from $BASE_SUITE with apt-get)"
for so in "$MODDIR"/*.so; do
  m=$(ldd "$so" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')
  [[ -z $m ]] || echo "fetch-qemu-other: warning: module $(basename "$so") cannot load, missing: $m" >&2
done
# Firmware links that point out of the prefix would pick up the system's (older) files.
find "$P/usr/share/qemu" "$P/usr/share/seabios" -type l -lname '/*' -printf 'fetch-qemu-other: warning: %p -> %l leaves the prefix\n' >&2

# --- 4. Check that it runs and answers QMP ------------------------------------------
version_out=$(QEMU_MODULE_DIR=$MODDIR "$QEMU" -version 2>&1) || die "$QEMU -version failed: $version_out"
grep -qF "version $QEMU_UPSTREAM " <<<"$version_out" || die "$QEMU -version printed: $version_out"
img_out=$("$P/usr/bin/qemu-img" --version 2>&1) || die "qemu-img --version failed: $img_out"
grep -qF "version $QEMU_UPSTREAM " <<<"$img_out" || die "qemu-img --version printed: $img_out"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-qemu-other.XXXXXX")
qemu_pid=
cleanup() {
  if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

say "checking QMP (query-version) on $B/root/usr/bin/qemu-system-x86_64"
QEMU_MODULE_DIR=$MODDIR "$QEMU" -accel tcg -nodefaults -display none -S -machine pc \
  -L "$P/usr/share/qemu" -L "$P/usr/share/seabios" \
  -qmp "unix:$tmp/qmp.sock,server=on,wait=off" >"$tmp/qemu.log" 2>&1 &
qemu_pid=$!
if ! "$py" - "$tmp/qmp.sock" "$qemu_pid" "$QEMU_UPSTREAM" >"$tmp/qmp.out" 2>&1 <<'EOF'
import asyncio, os, sys
from qemu.qmp import QMPClient, ExecuteError

async def main(sock, pid, want):
    qmp = QMPClient("fetch-qemu-other")
    for _ in range(200):  # up to 10 s for the socket to appear
        try:
            await qmp.connect(sock)
            break
        except Exception:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                sys.exit("QEMU exited before its QMP socket answered")
            await asyncio.sleep(0.05)
    else:
        sys.exit("QMP socket never answered")
    v = (await qmp.execute("query-version"))["qemu"]
    got = (v["major"], v["minor"], v["micro"])
    print("query-version:", got)
    # A NIC needs its option ROM (efi-virtio.rom, from the system's ipxe-qemu).
    try:
        await qmp.execute("device_add", {"driver": "virtio-net-pci", "id": "probe-nic"})
    except ExecuteError as e:
        print("warning: device_add virtio-net-pci failed:", e)
    try:
        await qmp.execute("quit")
    except Exception:
        pass
    try:
        await qmp.disconnect()
    except Exception:
        pass
    if got != want:
        sys.exit(f"query-version returned {got}, expected {want}")

asyncio.run(main(sys.argv[1], int(sys.argv[2]), tuple(int(n) for n in sys.argv[3].split("."))))
EOF
then
  sed 's/^/  /' "$tmp/qmp.out" "$tmp/qemu.log" >&2
  die "QMP check failed"
fi
grep '^warning' "$tmp/qmp.out" | sed 's/^/fetch-qemu-other: /' >&2 || true
for _ in $(seq 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
cleanup
qemu_pid=
trap - EXIT

printf '%s\n' "${PACKAGES[@]}" >"$stamp"
end=$(date +%s.%N)
say "fetched into $B/root ($(du -sh "$P" | cut -f1)) in $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}') s:"
printf '  %s\n' "${PACKAGES[@]}"
say "use: QEMU_MODULE_DIR=$B/root/usr/lib/x86_64-linux-gnu/qemu $B/root/usr/bin/qemu-system-x86_64 -L $B/root/usr/share/qemu -L $B/root/usr/share/seabios ..."
