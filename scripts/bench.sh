#!/usr/bin/env bash
# Benchmarks regfs against baselines measured in the same run and prints one
# Markdown table (stdout; progress on stderr). Needs only Go: it runs
# scripts/setup.sh first (fuse3, Go modules), starts the reference registry
# in-process, builds and pushes the benchmark images, mounts regfs and reads.
#
#   scripts/bench.sh            full run: 256 MiB layer, 20 000 small files, 3 repetitions
#   scripts/bench.sh -quick     small images, one repetition: under a minute
#   scripts/bench.sh -h         every flag of the driver (scripts/bench)
#
# Whatever happens (error, Ctrl-C, SIGTERM), no mount and no regfs process of
# this run is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/regfs-bench.XXXXXX")
driver_pid=""
# -keep: the driver keeps its working directory ($work/run: regfs logs,
# cache dirs), so this script must not remove it either.
keep=""
for a in "$@"; do
	case "$a" in -keep | --keep | -keep=true | --keep=true) keep=1 ;; esac
done

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
		kill -TERM "$driver_pid" 2>/dev/null || true
		for _ in $(seq 150); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$driver_pid" 2>/dev/null || true
	fi
	# Any mount the driver could not take down itself (it was killed hard).
	local mnt
	for mnt in $(awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	done
	# regfs processes of this run that are still up, by the ids the driver
	# wrote down (only if they are still our regfs binary).
	local pid
	for pid in $(cat "$work/run/pids" 2>/dev/null || true); do
		if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$work/run/regfs" ]; then
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	if [ -n "$keep" ]; then
		echo "bench: kept $work" >&2
	else
		rm -rf "$work" 2>/dev/null || true
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "bench: building the driver" >&2
go build -o "$work/bench" ./scripts/bench

# The driver builds ./cmd/regfs itself (into $work/run/regfs): a tree where
# regfs does not build still prints the table, with the reason in each row.
"$work/bench" -work "$work/run" "$@" &
driver_pid=$!
wait "$driver_pid"
