#!/usr/bin/env bash
# Installs what regfs's tests and demo need beyond Go itself: fusermount3
# (Debian's fuse3), skopeo and umoci (clients of the image views), and the
# Go modules. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null 2>&1; then sudo "$@"; else
			echo "setup: need root for: $*" >&2
			exit 1
		fi
	else
		"$@"
	fi
}

if ! command -v fusermount3 >/dev/null 2>&1; then
	echo "setup: installing fuse3 (fusermount3)"
	export DEBIAN_FRONTEND=noninteractive
	need_root apt-get update -q
	need_root apt-get install -y -q fuse3
fi
# Real clients for the mount tests: of the oci/ and image.tar views, and
# skopeo to warm a pull-through cache in the fleet tests.
missing=()
for tool in skopeo umoci; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	need_root apt-get update -q
	need_root apt-get install -y -q "${missing[@]}"
fi
if [ ! -e /dev/fuse ]; then
	echo "setup: /dev/fuse is missing; FUSE mounts cannot work on this machine" >&2
	exit 1
fi
if ! command -v go >/dev/null 2>&1; then
	echo "setup: Go is not on PATH" >&2
	exit 1
fi
echo "setup: downloading Go modules"
go mod download
echo "setup: done ($(go version), $(fusermount3 --version 2>&1 | head -1))"
