#!/usr/bin/env bash
# The test command (README, .ci/run): vet, then every test, then the race
# detector over the packages with concurrent code. Integration tests start a
# real registry (distribution/v3, in-process) and really mount with FUSE, so
# run scripts/setup.sh once first on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== go vet"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi

echo "== go test"
go test -count=1 -timeout 15m ./...

echo "== go test -race (concurrent packages)"
go test -race -count=1 -timeout 15m ./registry/... ./layercache/... ./layerindex/... ./rootfs/... ./session/... ./metastore/... ./fs/... ./cmd/...
