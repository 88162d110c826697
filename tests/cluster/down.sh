#!/usr/bin/env bash
# Stops the cluster tests/cluster/up.sh started in STATE_DIR and undoes what it
# changed on the host: processes (and every container), mounts, pod cgroups,
# the bridge and its route, iptables rules (kube-proxy's and the guard), CNI
# caches, kernel settings. Safe to run on a half-started cluster, and twice.
#
# Usage: sudo bash tests/cluster/down.sh STATE_DIR [--keep-state]
set -uo pipefail

state="${1:?usage: down.sh STATE_DIR [--keep-state]}"
keep="${2:-}"
[ -d "$state" ] || { echo "cluster/down.sh: no $state"; rm -f /run/pushgate-cluster.state; exit 0; }
state="$(cd "$state" && pwd)"
cd "$state"
bin="$(cat run/bin 2>/dev/null || true)"
uplink="$(cat run/uplink 2>/dev/null || true)"

stop() { # name: SIGTERM, then SIGKILL after 10 s
  local f="run/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

# kubelet first, so nothing restarts the containers killed below.
stop kubelet
# Every container process, then the shims: whatever runs in the pod cgroups.
for procs in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/*/kubepods*; do
  [ -d "$procs" ] || continue
  find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
done
pkill -KILL -f "containerd-shim-runc-v2 .*$state" 2>/dev/null
for name in kube-proxy containerd coredns kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "$name"
done

# kube-proxy's chains and rules; then the guard.
if [ -n "$bin" ] && [ -x "$bin/kube-proxy" ]; then
  "$bin/kube-proxy" --cleanup >/dev/null 2>&1
fi
# Chains that appeared since up.sh (kubelet's KUBE-FIREWALL and canaries, in
# both families, and anything CNI made): first the rules that jump to them,
# then the chains themselves.
if [ -f run/chains.before ]; then
  for fam in iptables ip6tables; do
    for table in filter nat mangle; do
      new="$("$fam" -t "$table" -S 2>/dev/null | awk '$1 == "-N" {print $2}' |
        while read -r c; do grep -qxF "$fam $table $c" run/chains.before || echo "$c"; done)"
      [ -z "$new" ] && continue
      for c in $new; do
        "$fam" -t "$table" -S 2>/dev/null | awk -v c="$c" '$1 == "-A" && / -j / { for (i = 1; i <= NF; i++) if ($i == "-j" && $(i+1) == c) print }' |
          while read -r rule; do eval "\"$fam\" -t $table ${rule/-A/-D}" 2>/dev/null; done
      done
      for c in $new; do "$fam" -t "$table" -F "$c" 2>/dev/null; done
      for c in $new; do "$fam" -t "$table" -X "$c" 2>/dev/null; done
    done
  done
fi
iptables -t filter -D FORWARD -j PGNODE-GUARD 2>/dev/null
iptables -t filter -D OUTPUT -j PGNODE-GUARD 2>/dev/null
iptables -t mangle -D POSTROUTING -j PGNODE-GUARD 2>/dev/null
for table in filter mangle; do
  iptables -t "$table" -F PGNODE-GUARD 2>/dev/null
  iptables -t "$table" -X PGNODE-GUARD 2>/dev/null
done

# Mounts below the state directory, deepest first (kubelet's rshared root,
# secret tmpfs, overlay rootfs, network namespaces).
for _ in 1 2 3; do
  mounts="$(awk -v s="$state" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | sort -r -u)"
  [ -z "$mounts" ] && break
  for m in $mounts; do umount -l "$m" 2>/dev/null; done
done
# Pod cgroups kubelet made (empty now), deepest first.
for root in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/*/kubepods*; do
  [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null
done

ip link del pg0 2>/dev/null
ip route del 10.96.0.0/24 2>/dev/null
rm -f /var/lib/cni/results/pushgate-* 2>/dev/null
find /var/log/containers /var/log/pods -maxdepth 1 -xtype l -delete 2>/dev/null
if [ -f run/created-var-lib-kubelet ]; then rm -rf /var/lib/kubelet; fi

if [ -f run/sysctl.saved ]; then
  while IFS= read -r kv; do sysctl -q -w "$kv" >/dev/null; done < run/sysctl.saved
fi
rm -f /run/pushgate-cluster.state
cd /
if [ "$keep" != "--keep-state" ]; then rm -rf "$state"; fi
echo "cluster in $state is down"
