#!/usr/bin/env bash
# Tear down the test cluster of k8s-up.sh: stop its processes by their recorded pids, then remove the mounts,
# network namespaces, bridge, iptables chains and state it left. Safe to run when nothing is up.
D=${K8S_DIR:-/tmp/k8s}
[ -f "$D/pids" ] || exit 0
pid_of() { awk -v n="$1" '$2==n {print $1}' "$D/pids"; }
if [ -S "$D/containerd/containerd.sock" ]; then
  # Kill the pods' containers first, while containerd still runs, so their shims, mounts and netns go too.
  for p in $(pid_of kubelet) $(pid_of kube-proxy); do kill "$p" 2>/dev/null; done
  C="ctr -a $D/containerd/containerd.sock -n k8s.io"
  for t in $($C tasks ls -q 2>/dev/null); do $C tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 1
  for t in $($C tasks ls -q 2>/dev/null); do $C tasks delete -f "$t" >/dev/null 2>&1; done
  for c in $($C containers ls -q 2>/dev/null); do $C containers delete "$c" >/dev/null 2>&1; done
fi
# Then the rest, last started first.
tac "$D/pids" | while read -r pid name; do kill "$pid" 2>/dev/null; done
for _ in $(seq 20); do alive=0; while read -r pid name; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$D/pids"; [ $alive = 0 ] && break; sleep 0.5; done
while read -r pid name; do kill -9 "$pid" 2>/dev/null; done < "$D/pids"
# Shims that outlived containerd (re-parented to init); only those of this state directory.
for f in "$D"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
findmnt -rn -o TARGET | grep "^$D/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns del "$ns" 2>/dev/null; done
ip link del cni0 2>/dev/null
# kubelet and kube-proxy made KUBE-* chains: drop the jumps to them, then the chains.
for IPT in iptables ip6tables; do for t in filter nat mangle; do
  $IPT -t $t -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' | sed 's/^-A/-D/' | while read -r r; do eval $IPT -t $t $r; done
  for c in $($IPT -t $t -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do $IPT -t $t -F $c; done
  for c in $($IPT -t $t -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do $IPT -t $t -X $c; done
done; done
iptables -D FORWARD -s 10.244.0.0/16 -o eth0 -j DROP 2>/dev/null
rm -rf /var/lib/cni/networks/k8s-test
[ -f "$D/ip_forward.orig" ] && sysctl -qw net.ipv4.ip_forward="$(cat "$D/ip_forward.orig")"
rm -rf "$D"
