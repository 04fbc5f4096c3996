#!/usr/bin/env bash
# Import a directory into the test node's containerd as a one-layer image (the cluster has no registry).
#   k8s-image.sh NAME:TAG ROOTFS_DIR [Entrypoint|Cmd] [JSON_ARRAY]
# Pods use it as NAME:TAG with imagePullPolicy IfNotPresent or Never.
set -euo pipefail
D=${K8S_DIR:-/tmp/k8s}
name=$1 root=$2 key=${3:-Entrypoint} ep=${4:-'["/bin/sh"]'}
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
tar -C "$root" --owner=0 --group=0 -cf "$w/layer.tar" .
diff=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{"%s":%s,"Env":["PATH=/bin:/usr/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$key" "$ep" "$diff" > "$w/config.json"
printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$name" > "$w/manifest.json"
tar -C "$w" -cf "$w/image.tar" manifest.json config.json layer.tar
ctr -a "$D/containerd/containerd.sock" -n k8s.io images import "$w/image.tar" >/dev/null
echo "loaded $name"
