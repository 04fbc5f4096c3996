#!/bin/bash
# Build the Kubernetes binaries the test cluster runs, at the version go.mod pins, into $1 (default ./bin).
# The version strings are set as the release builds set them: clients check them.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-$PWD/bin}
V=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
MINOR=$(echo "$V" | cut -d. -f2)
LDF="-s -w -X k8s.io/component-base/version.gitVersion=$V -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$V"
mkdir -p "$OUT"
go build -trimpath -ldflags "$LDF" -o "$OUT/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
