#!/usr/bin/env bash
# Pin another Kubernetes version: ./gen.sh v1.31.4 rewrites go.mod and go.sum.
# k8s.io/kubernetes depends on its staging modules at v0.0.0 through replace directives to ./staging, which do
# not apply to a module that depends on it; so each is replaced here by its published tag, v0.MINOR.PATCH.
# k8s.io/sample-apiserver is not on the proxy at every version and no binary needs it: a local stub stands in.
set -euo pipefail
cd "$(dirname "$0")"
KV=${1:?usage: gen.sh v1.MINOR.PATCH}
SV=v0.${KV#v1.}
MOD=$(go mod download -json "k8s.io/kubernetes@$KV" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
  printf 'module github.com/berthrun/berth/tools/k8s/k8stools\n\ngo 1.22.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KV"
  for m in $(awk '/^\tk8s\.io\/[^ ]+ v0\.0\.0$/ {print $1}' "$MOD" | sort -u); do
    if [ "$m" = k8s.io/sample-apiserver ]; then continue; fi   # not needed by any binary, and not always on the proxy
    printf '\t%s => %s %s\n' "$m" "$m" "$SV"
  done
  printf '\tk8s.io/sample-apiserver => ./stub/sample-apiserver\n)\n'
} > go.mod
mkdir -p stub/sample-apiserver
printf 'module k8s.io/sample-apiserver\n\ngo 1.22.0\n' > stub/sample-apiserver/go.mod
rm -f go.sum
go mod tidy
