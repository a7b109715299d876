#!/usr/bin/env bash
# The old name of tools/fetch-qemu-other.sh (which fetched QEMU 10.0 on bookworm): kept so that
# existing commands go on working. On Debian 12 it still fetches 10.0.2 into build/qemu-10.0.
exec bash "$(dirname "$0")/fetch-qemu-other.sh" "$@"
