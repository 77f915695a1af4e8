#!/usr/bin/env bash
# Regenerates the Go code of every .proto under proto/ into OUT (default:
# the source tree). The plugins are pinned as go.mod tools; protoc comes
# from Debian (the Makefile installs it). proto_test.go runs this into a
# temporary folder and fails if the committed code differs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
mkdir -p "$out"
protoc \
  --plugin=protoc-gen-go="$(go tool -n protoc-gen-go)" \
  --plugin=protoc-gen-go-grpc="$(go tool -n protoc-gen-go-grpc)" \
  --go_out="$out" --go_opt=module=github.com/headroomdb/headroom \
  --go-grpc_out="$out" --go-grpc_opt=module=github.com/headroomdb/headroom \
  -I proto \
  $(cd proto && find . -name '*.proto' | sort | sed 's|^\./||')
