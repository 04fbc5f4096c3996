#!/usr/bin/env bash
# Berth's test cluster: a disposable one-node Kubernetes on this machine, for the kubernetes sandbox driver's tests.
#   K8S_MODE=full (default): control plane plus containerd/runc, kubelet and kube-proxy, so pods really run;
#   K8S_MODE=api: control plane only (pods are stored but never run).
# There is no registry: images are built here and imported into containerd (see k8s-image.sh).
# On success it writes $K8S_DIR/env (KUBECONFIG, PATH and the BERTH_TEST_KUBE* variables the tests read) and
# $K8S_DIR/pids (what k8s-down.sh stops). Any failure exits non-zero, so CI fails loudly.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${K8S_MODE:-full}
D=${K8S_DIR:-/tmp/k8s}
KVER=$(cd "$HERE/k8stools" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
BIN=${K8S_BIN:-$HOME/.cache/k8s-bin/$KVER}
POD_PIDS_LIMIT=${K8S_POD_PIDS_LIMIT:-256}
log() { echo "[k8s-up +$SECONDS s] $*"; }

# Debian packages, installed only when missing.
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v openssl >/dev/null || need+=(openssl)
if [ "$MODE" = full ]; then
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v socat >/dev/null || need+=(socat)
  [ -x /bin/busybox ] || need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Where systemd runs, the etcd-server package starts a service of its own on 2379; ours needs the port.
systemctl stop etcd 2>/dev/null || true

# The Kubernetes binaries come from the Go module proxy (k8stools pins the version); the cold build takes
# minutes, so they are cached per version under ~/.cache.
if [ ! -x "$BIN/kubelet" ]; then
  log "building Kubernetes $KVER into $BIN (cold: ~6 min on 2 cores, ~3 GB GOCACHE)"
  "$HERE/k8stools/build.sh" "$BIN.tmp" && rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
fi
export PATH="$BIN:$PATH"

# A fresh state directory (stopping a cluster an earlier run left there), service-account keys, a token
# and a kubeconfig for the admin.
K8S_DIR=$D "$HERE/k8s-down.sh"; rm -rf "$D"; mkdir -p "$D"/{pki,etcd,logs,kubelet,containerd,cni,images}
openssl genrsa -out "$D/pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$D/pki/sa.key" -pubout -out "$D/pki/sa.pub" 2>/dev/null
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN,admin,admin,system:masters" > "$D/pki/tokens.csv"
cat > "$D/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:6443", certificate-authority: "$D/pki/serving/apiserver.crt"}}]
users: [{name: admin, user: {token: "$TOKEN"}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
KC
: > "$D/pids"
start() { local name=$1; shift; nohup "$@" > "$D/logs/$name.log" 2>&1 & echo "$! $name" >> "$D/pids"; }
wait_for() { local what=$1 n=$2; shift 2; for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done; echo "timeout waiting for $what" >&2; tail -20 "$D"/logs/*.log >&2; exit 1; }

# Control plane: etcd, then the API server.
ADVERTISE=127.0.0.1
if [ "$MODE" = full ]; then
  # The API server listens on loopback only. Pods reach it through the "kubernetes" Service, which points at
  # the advertised address: the bridge's own address, where socat forwards to loopback.
  ip link show cni0 >/dev/null 2>&1 || ip link add cni0 type bridge
  ip addr replace 10.244.0.1/24 dev cni0; ip link set cni0 up
  ADVERTISE=10.244.0.1
fi
start etcd etcd --data-dir "$D/etcd" --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
  --quota-backend-bytes=4294967296
wait_for etcd 60 curl -sf http://127.0.0.1:2379/health
log "etcd up"
start kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=127.0.0.1 --advertise-address=$ADVERTISE --secure-port=6443 --cert-dir="$D/pki/serving" \
  --token-auth-file="$D/pki/tokens.csv" --authorization-mode=RBAC --allow-privileged=true \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$D/pki/sa.pub" --service-account-signing-key-file="$D/pki/sa.key" \
  --service-cluster-ip-range=10.96.0.0/24
wait_for kube-apiserver 120 curl -sfk -H "Authorization: Bearer $TOKEN" https://127.0.0.1:6443/readyz
log "kube-apiserver ready"
# The controller manager makes each namespace's default ServiceAccount (pods need it) and collects garbage
# (a sandbox's NetworkPolicy is owned by its pod); the scheduler puts pods on the node.
start kube-controller-manager kube-controller-manager --kubeconfig="$D/kubeconfig" --leader-elect=false \
  --bind-address=127.0.0.1 --secure-port=10257 --service-account-private-key-file="$D/pki/sa.key" \
  --root-ca-file="$D/pki/serving/apiserver.crt" --controllers='*,-nodeipam'
start kube-scheduler kube-scheduler --kubeconfig="$D/kubeconfig" --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259
wait_for "default ServiceAccount" 120 kubectl --kubeconfig="$D/kubeconfig" -n default get serviceaccount default
log "controller-manager + scheduler up"

if [ "$MODE" = full ]; then
  # Images made here: the pod sandbox's pause process, and busybox-static, the base image of Berth's pods.
  mkdir -p "$D/images/pause/src" "$D/images/pause/root" "$D/images/busybox/root/bin" "$D/images/busybox/root/tmp"
  cat > "$D/images/pause/src/main.go" <<'GO'
package main

import ("os"; "os/signal"; "syscall")

func main() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range ch {
		if s != syscall.SIGCHLD { os.Exit(0) }
		for { var ws syscall.WaitStatus; if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil { break } }
	}
}
GO
  (cd "$D/images/pause/src" && printf 'module pause\n\ngo 1.22\n' > go.mod && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o ../root/pause .)
  cp /bin/busybox "$D/images/busybox/root/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$D/images/busybox/root/bin/$a"; done

  # The node: a containerd of our own (root, state and socket under $D, apart from any system one), the
  # bridge CNI network 10.244.0.0/24, the kubelet and kube-proxy.
  # restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE, and without it every pod sandbox fails to start.
  containerd config default > "$D/containerd/config.toml"
  sed -i -e "s#^root = .*#root = \"$D/containerd/root\"#" -e "s#^state = .*#state = \"$D/containerd/state\"#" \
    -e "s#address = \"/run/containerd/containerd.sock\"#address = \"$D/containerd/containerd.sock\"#" \
    -e "s#sandbox_image = .*#sandbox_image = \"localhost/pause:local\"#" \
    -e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" \
    -e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"/usr/lib/cni\"#" -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$D/cni\"#" \
    "$D/containerd/config.toml"
  cat > "$D/cni/10-bridge.conflist" <<'CNI'
{"cniVersion": "1.0.0", "name": "k8s-test", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]],
            "routes": [{"dst": "10.244.0.0/16"}, {"dst": "10.96.0.0/24"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
  cat /proc/sys/net/ipv4/ip_forward > "$D/ip_forward.orig"   # the bridge plugin enables forwarding; down restores it
  # Pods have no default route, and nothing they send is forwarded out of the machine either.
  iptables -C FORWARD -s 10.244.0.0/16 -o eth0 -j DROP 2>/dev/null || iptables -I FORWARD -s 10.244.0.0/16 -o eth0 -j DROP
  start socat socat TCP-LISTEN:6443,bind=10.244.0.1,reuseaddr,fork TCP:127.0.0.1:6443
  start containerd containerd --config "$D/containerd/config.toml"
  wait_for containerd 60 ctr -a "$D/containerd/containerd.sock" version
  K8S_DIR=$D "$HERE/k8s-image.sh" localhost/pause:local "$D/images/pause/root" Entrypoint '["/pause"]'
  K8S_DIR=$D "$HERE/k8s-image.sh" localhost/busybox:local "$D/images/busybox/root" Cmd '["sh"]'
  cat > "$D/kubelet.yaml" <<KCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false   # cgroup v1 here; newer kubelets refuse it unless told
podPidsLimit: $POD_PIDS_LIMIT   # Kubernetes has no per-pod pids limit in the pod spec: this caps every pod
maxPods: 200   # the default 110 leaves little beside the bench's 100 sessions; the /24 of the CNI has 253 addresses
containerRuntimeEndpoint: unix://$D/containerd/containerd.sock
failSwapOn: false
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
localStorageCapacityIsolation: false
resolvConf: /etc/resolv.conf
KCFG
  # The node is called "localhost": the kubelet will not take a loopback node IP, and the API server reaches
  # it (for logs) through its Hostname address, which then resolves to loopback.
  start kubelet kubelet --kubeconfig="$D/kubeconfig" --config="$D/kubelet.yaml" --root-dir="$D/kubelet" --hostname-override=localhost
  start kube-proxy kube-proxy --kubeconfig="$D/kubeconfig" --hostname-override=localhost --proxy-mode=iptables \
    --cluster-cidr=10.244.0.0/16 --conntrack-max-per-core=0 --bind-address=127.0.0.1 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --nodeport-addresses=127.0.0.0/8
  wait_for "node Ready" 120 kubectl --kubeconfig="$D/kubeconfig" wait --for=condition=Ready node/localhost --timeout=1s
  log "node localhost Ready (images: localhost/pause:local, localhost/busybox:local)"
fi
{
  printf 'export KUBECONFIG=%s\nexport PATH=%s:$PATH\n' "$D/kubeconfig" "$BIN"
  printf 'export BERTH_TEST_KUBECONFIG=%s\n' "$D/kubeconfig"
  if [ "$MODE" = full ]; then
    printf 'export BERTH_TEST_KUBE_HOST_IP=10.244.0.1\nexport BERTH_TEST_KUBE_POD_PIDS_LIMIT=%s\n' "$POD_PIDS_LIMIT"
    printf 'export BERTH_TEST_KUBE_SECCOMP_DIR=%s\n' "$D/kubelet/seccomp"
  fi
} > "$D/env"
log "done: source $D/env"
