#!/usr/bin/env bash
# Starts a single-node Kubernetes cluster on this Linux host, as root and
# without Docker: etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler from tests/controlplane/build.sh, Debian's containerd and
# runc, a kubelet, kube-proxy (iptables), CoreDNS and CNI bridge networking.
# Everything lives under STATE_DIR and on the bridge pg0 (10.244.0.1/24);
# packets to the pod or Service range, or from pods, never leave through the
# uplink. tests/cluster/down.sh STATE_DIR undoes all of it.
#
# Usage: sudo bash tests/cluster/up.sh STATE_DIR [IMAGES_DIR]
#   IMAGES_DIR: *.oci.tar from tests/cluster/images.sh, imported into containerd.
# Prints `export KUBECONFIG=STATE_DIR/kubeconfig` when the node is Ready.
set -euo pipefail

state="${1:?usage: up.sh STATE_DIR [IMAGES_DIR]}"
images="${2:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "cluster/up.sh: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (kubelet, containerd and the bridge need it)"
for c in containerd containerd-shim-runc-v2 runc ctr iptables ip openssl conntrack; do
  command -v "$c" >/dev/null || fail "$c missing: apt-get install -y containerd runc iptables iproute2 conntrack openssl"
done
bin="$(bash "$here/../controlplane/build.sh" | tail -1)"
[ -x "$bin/kubelet" ] || fail "no kubelet in $bin"

# The fixed facts of this node (one per machine: kubelet insists on some host paths).
node=pg-node
bridge=pg0
node_ip=10.244.0.1
pod_cidr=10.244.0.0/24
svc_cidr=10.96.0.0/24
api_ip=10.96.0.1
api_port="${PUSHGATE_CLUSTER_API_PORT:-16443}"
uplink="$(ip -o route show default | awk '{print $5; exit}')"
lock=/run/pushgate-cluster.state

if [ -e "$lock" ]; then
  other="$(cat "$lock")"
  fail "a cluster is already up (state $other); run tests/cluster/down.sh $other first"
fi
mkdir -p "$state"
state="$(cd "$state" && pwd)"
echo "$state" > "$lock"
cd "$state"
mkdir -p pki log run pv cni/net.d cni/ipam containerd kubelet pod-logs
echo "$bin" > run/bin
echo "$uplink" > run/uplink

# --- kernel settings kubelet and CNI change, restored by down.sh -------------
for k in kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward; do
  echo "$k=$(sysctl -n "$k")"
done > run/sysctl.saved
[ -d /var/lib/kubelet ] || touch run/created-var-lib-kubelet
# Chains kubelet, kube-proxy and CNI may add; down.sh removes only the new ones.
for fam in iptables ip6tables; do
  for table in filter nat mangle; do
    "$fam" -t "$table" -S 2>/dev/null | awk -v f="$fam" -v t="$table" '$1 == "-N" {print f, t, $2}'
  done
done > run/chains.before

# --- network: the bridge first (kubelet and the apiserver listen on it) -------
ip link add "$bridge" type bridge
ip addr add "$node_ip/24" dev "$bridge"
ip link set "$bridge" up
# Service addresses without an endpoint go to the bridge, never to the uplink.
ip route add "$svc_cidr" dev "$bridge" src "$node_ip"
# Guard: nothing to or from the pod range, nor to the Service range, leaves
# through the uplink, whatever kube-proxy or CNI does. Filter FORWARD/OUTPUT,
# and mangle POSTROUTING as a backstop after every other table.
for table in filter mangle; do
  iptables -t "$table" -N PGNODE-GUARD
  iptables -t "$table" -A PGNODE-GUARD -o "$uplink" -d "$pod_cidr" -j DROP
  iptables -t "$table" -A PGNODE-GUARD -o "$uplink" -d "$svc_cidr" -j DROP
  iptables -t "$table" -A PGNODE-GUARD -o "$uplink" -s "$pod_cidr" -j DROP
done
iptables -t filter -I FORWARD 1 -j PGNODE-GUARD
iptables -t filter -I OUTPUT 1 -j PGNODE-GUARD
iptables -t mangle -I POSTROUTING 1 -j PGNODE-GUARD

# --- PKI: one throwaway CA for every component --------------------------------
cd pki
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey rsa:2048 -nodes -days 3 -keyout ca.key -out ca.crt -subj "/CN=pushgate-cluster-ca"
cert() { # name subject extfile-lines
  local name="$1" subj="$2"; shift 2
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" "$@" > "$name.ext"
  ossl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj"
  ossl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 -out "$name.crt" -extfile "$name.ext"
}
client="extendedKeyUsage=clientAuth"
cert apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth" \
  "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$node_ip,IP:$api_ip"
cert admin "/O=system:masters/CN=admin" "$client"
cert kubelet-client "/O=system:nodes/CN=system:node:$node" "$client"
cert kubelet-serving "/CN=$node" "extendedKeyUsage=serverAuth" "subjectAltName=DNS:$node,IP:$node_ip"
cert kube-proxy "/CN=system:kube-proxy" "$client"
# The aggregation layer (custom.metrics.k8s.io from prometheus-adapter): the
# apiserver proxies to extension servers as front-proxy-client, from a CA of
# its own so no other client certificate can pass for it.
ossl req -x509 -newkey rsa:2048 -nodes -days 3 -keyout front-proxy-ca.key -out front-proxy-ca.crt -subj "/CN=pushgate-front-proxy-ca"
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" "$client" > front-proxy-client.ext
ossl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr -subj "/CN=front-proxy-client"
ossl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial -days 3 \
  -out front-proxy-client.crt -extfile front-proxy-client.ext
ossl genrsa -out sa.key 2048
ossl rsa -in sa.key -pubout -out sa.pub
cd "$state"

kubeconfig() { # file user-cert user-key
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pushgate
  cluster: {server: "https://$node_ip:$api_port", certificate-authority: $state/pki/ca.crt}
users:
- name: user
  user: {client-certificate: $2, client-key: $3}
contexts:
- name: pushgate
  context: {cluster: pushgate, user: user}
current-context: pushgate
EOF
}
kubeconfig kubeconfig "$state/pki/admin.crt" "$state/pki/admin.key"
kubeconfig run/kubelet.kubeconfig "$state/pki/kubelet-client.crt" "$state/pki/kubelet-client.key"
kubeconfig run/kube-proxy.kubeconfig "$state/pki/kube-proxy.crt" "$state/pki/kube-proxy.key"

# Starts a daemon in its own session; its pid goes to run/NAME.pid, output to log/NAME.log.
daemon() {
  local name="$1"; shift
  setsid "$@" > "log/$name.log" 2>&1 < /dev/null &
  echo $! > "run/$name.pid"
}
# Waits (bounded) until the command succeeds.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local i
  for ((i = 0; i < secs * 4; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  fail "$what not ready within ${secs}s (logs: $state/log)"
}
kubectl() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

# --- control plane -------------------------------------------------------------
daemon etcd "$bin/etcd" --data-dir "$state/etcd" --listen-client-urls http://127.0.0.1:12379 \
  --advertise-client-urls http://127.0.0.1:12379 --listen-peer-urls http://127.0.0.1:12380 \
  --initial-advertise-peer-urls http://127.0.0.1:12380 --initial-cluster default=http://127.0.0.1:12380 \
  --unsafe-no-fsync
daemon kube-apiserver "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:12379 \
  --bind-address "$node_ip" --advertise-address "$node_ip" --secure-port "$api_port" \
  --endpoint-reconciler-type lease \
  --tls-cert-file pki/apiserver.crt --tls-private-key-file pki/apiserver.key --client-ca-file pki/ca.crt \
  --kubelet-client-certificate pki/admin.crt --kubelet-client-key pki/admin.key \
  --kubelet-certificate-authority pki/ca.crt --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file pki/sa.pub \
  --service-account-signing-key-file pki/sa.key --service-cluster-ip-range "$svc_cidr" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
  --requestheader-client-ca-file pki/front-proxy-ca.crt --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file pki/front-proxy-client.crt --proxy-client-key-file pki/front-proxy-client.key \
  --enable-aggregator-routing=true
wait_for kube-apiserver 90 kubectl get --raw /readyz
daemon kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$state/kubeconfig" \
  --secure-port 0 --leader-elect=false --root-ca-file pki/ca.crt \
  --service-account-private-key-file pki/sa.key --use-service-account-credentials=false \
  --cluster-signing-cert-file pki/ca.crt --cluster-signing-key-file pki/ca.key \
  --horizontal-pod-autoscaler-sync-period 5s
daemon kube-scheduler "$bin/kube-scheduler" --kubeconfig "$state/kubeconfig" --leader-elect=false --secure-port 0

# --- storage: PersistentVolumes made in advance under STATE_DIR/pv ------------
# Directories owned by the gateway's uid (hostPath volumes ignore fsGroup).
pvs=""
for i in 1 2 3 4 5 6 7 8; do
  mkdir -p "pv/$i"; chown 65532:65532 "pv/$i"; chmod 0770 "pv/$i"
  pvs="$pvs
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pushgate-local-$i}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: pushgate-local
  hostPath: {path: $state/pv/$i, type: Directory}"
done
wait_for "the default namespace" 60 kubectl get serviceaccount default -n default
kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: pushgate-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
$pvs
EOF

# --- cluster DNS: CoreDNS on the bridge address, nothing forwarded -------------
cat > run/Corefile <<EOF
.:53 {
    bind $node_ip
    errors
    cache 5
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $state/kubeconfig pushgate
        pods insecure
    }
}
EOF
daemon coredns "$bin/coredns" -conf run/Corefile

# --- containerd: its own root, state, socket; pulls only from loopback ---------
sock="$state/containerd/containerd.sock"
mkdir -p containerd/certs.d/_default containerd/certs.d/ghcr.io containerd/certs.d/docker.io containerd/certs.d/pushgate.local
for h in _default ghcr.io docker.io pushgate.local; do
  # No registry is reachable from here: a pull fails at once, on loopback.
  printf 'server = "http://127.0.0.1:1"\n' > "containerd/certs.d/$h/hosts.toml"
done
cat > cni/net.d/10-pushgate.conflist <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pushgate",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$state/cni/ipam", "ranges": [[{"subnet": "$pod_cidr", "gateway": "$node_ip"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat > containerd/config.toml <<EOF
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "pushgate.local/pause:1"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$state/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$bin/cni"
    conf_dir = "$state/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$state/containerd/certs.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$state/containerd/opt"
EOF
daemon containerd containerd --config containerd/config.toml
ctr() { command ctr --address "$sock" -n k8s.io "$@"; }
wait_for containerd 30 ctr version
if [ -n "$images" ]; then
  for tar in "$images"/*.oci.tar; do
    ctr images import "$tar" >/dev/null
  done
fi
# Not `ctr … | grep -q`: under pipefail, grep quitting at the first match
# can kill ctr with SIGPIPE and fail the pipeline although the image is there.
ctr images ls -q > "$state/images.txt"
grep -qx "pushgate.local/pause:1" "$state/images.txt" \
  || fail "the sandbox image pushgate.local/pause:1 is missing: pass IMAGES_DIR from tests/cluster/images.sh"

# --- kubelet and kube-proxy ------------------------------------------------------
mkdir -p /var/lib/kubelet/device-plugins /var/log/containers
printf 'options ndots:1\n' > run/resolv.conf
cat > run/kubelet.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $state/pki/kubelet-serving.crt
tlsPrivateKeyFile: $state/pki/kubelet-serving.key
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
clusterDNS: [$node_ip]
clusterDomain: cluster.local
resolvConf: $state/run/resolv.conf
podLogsDir: $state/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1%", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
EOF
daemon kubelet "$bin/kubelet" --config run/kubelet.yaml --kubeconfig run/kubelet.kubeconfig \
  --hostname-override "$node" --node-ip "$node_ip" --root-dir "$state/kubelet"
cat > run/kube-proxy.yaml <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/run/kube-proxy.kubeconfig}
hostnameOverride: $node
mode: iptables
clusterCIDR: $pod_cidr
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
daemon kube-proxy "$bin/kube-proxy" --config run/kube-proxy.yaml
wait_for "node $node Ready" 120 sh -c "'$bin/kubectl' --kubeconfig '$state/kubeconfig' get node $node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
echo "node $node Ready; state in $state"
echo "export KUBECONFIG=$state/kubeconfig"
