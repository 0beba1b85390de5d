#!/usr/bin/env bash
# The demo: on a machine with only Go, install what is missing, start a local
# registry on 127.0.0.1, push a small sample image built here, mount it with
# regfs, look inside, unmount, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh >/dev/null
work=$(mktemp -d /tmp/regfs-demo.XXXXXX)
port=${REGFS_DEMO_PORT:-5055}
reg=127.0.0.1:$port
mnt=$work/mnt
mkdir -p "$mnt" "$work/bin"

cleanup() {
	set +e
	if mountpoint -q "$mnt" 2>/dev/null; then fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; fi
	[ -n "${regfs_pid:-}" ] && wait "$regfs_pid" 2>/dev/null
	[ -n "${registry_pid:-}" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "demo: building regfs and the test-image tool"
go build -o "$work/bin/regfs" ./cmd/regfs
go build -o "$work/bin/testimages" ./scripts/testimages

echo "demo: starting a registry (distribution/v3) on $reg"
"$work/bin/testimages" -serve "$reg" -dir "$work/storage" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fsS "http://$reg/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
"$work/bin/testimages" -registry "$reg" -no-large

echo "demo: mounting $reg on $mnt"
"$work/bin/regfs" mount --log-level warn "$reg" "$mnt" &
regfs_pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done

step "ls $mnt/test"
ls "$mnt/test"
step "ls -l $mnt/test/small:latest/"
ls -l "$mnt/test/small:latest/"
step "cat $mnt/test/small:latest/rootfs/etc/hostname"
cat "$mnt/test/small:latest/rootfs/etc/hostname"
layer=$(ls "$mnt/test/small:latest/layers" | head -1)
step "tar -tvf $mnt/test/small:latest/layers/$layer/layer.tar"
tar -tvf "$mnt/test/small:latest/layers/$layer/layer.tar"
step "sha256sum manifest.json; the digest the registry serves"
sha256sum "$mnt/test/small:latest/manifest.json"
curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$reg/v2/test/small/manifests/latest" | grep -i docker-content-digest
step "fusermount3 -u $mnt"
fusermount3 -u "$mnt"
wait "$regfs_pid"
echo "regfs exited with status $?"
regfs_pid=
