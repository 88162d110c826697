#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane used by the operator tests from Go
# modules (no release downloads are possible here) into
#   $PUSHGATE_K8S_CACHE/<k8s version>/bin   (default $HOME/.cache/pushgate-k8s)
# Idempotent: binaries already present are skipped. Prints the bin dir last.
# Usage: bash tests/controlplane/build.sh
set -euo pipefail

# One Kubernetes minor everywhere; must match the k8s-openapi feature of the
# operator crate (v1_34).
K8S_VERSION="v1.34.4"
ETCD_VERSION="v3.6.16"
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.21.4"
PROMETHEUS_VERSION="v0.316.0"   # the Go module of Prometheus v3.x: the server and promcheck
CNI_PLUGINS_VERSION="v1.10.0"   # bridge, host-local, loopback, portmap for the real node
COREDNS_VERSION="v1.15.0"       # cluster DNS of the real node
KEDA_VERSION="v2.21.0"          # KEDA: its CRDs, operator and metrics adapter
PROMETHEUS_RELEASE="3.16.0"     # the release PROMETHEUS_VERSION is, for the server's version string
PROMETHEUS_ADAPTER_VERSION="v0.12.0"  # served by the proxy but not listed: exact version only

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PUSHGATE_K8S_CACHE:-$HOME/.cache/pushgate-k8s}"
bin="$cache/$K8S_VERSION/bin"
work="$cache/$K8S_VERSION/work"
mkdir -p "$bin" "$work"
# Test binaries may call this concurrently; one builds, the others wait.
if command -v flock >/dev/null; then
  exec 9>"$cache/.build.lock"
  flock 9
fi

export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export GOMODCACHE="$cache/gomod"
export GOCACHE="$cache/gobuild"
export GOPATH="$cache/gopath"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"

fail() { echo "controlplane/build.sh: FAILED: $*" >&2; exit 1; }
command -v go >/dev/null || fail "the Go toolchain (go) is not on PATH; install Go >= 1.24"
have() { [ -x "$bin/$1" ]; }
# The tools that only serve the tests at a trickle (helm, kwok, CoreDNS,
# Prometheus, the metrics adapters, KEDA, CNI) are compiled without the
# optimiser and inliner: a quarter less compile CPU (helm cold: 136 s against
# 102 s), and nothing in a test waits on their speed. etcd and the
# Kubernetes commands, which every test leans on, stay optimised. One value
# for every lean step: a package compiled with the same flags in the same
# build cache is compiled once for all of them.
LEAN_GC="-gcflags=all=-N -l"
stamp() { date +%s; }
t_all=$(stamp)

# Each step reports where its time went: fetching modules (go get, go mod
# tidy, and a `go build -n` / `go install -n` pass, which downloads every
# module the build needs and compiles nothing), then compiling and linking.
# The summary at the end repeats every step's line.
times="$(mktemp)"
trap 'rm -f "$times" "$times".*' EXIT
# go_phased STEP go build|install ARGS...: the fetch pass, then the build,
# whose seconds done_step adds up. Callers use it as `... || fail`, where
# errexit is off: every failure returns explicitly.
go_phased() {
  local step=$1 t1 plan="$work/$1.plan"
  shift
  "$1" "$2" -n "${@:3}" >"$plan" 2>&1 || { tail -n 40 "$plan" >&2; return 1; }
  rm -f "$plan"
  t1=$(stamp)
  "$@" || return 1
  echo $(( $(stamp) - t1 )) >> "$times.$step"
}
# cpu_ms: sets cpu to the CPU time (user + system, ms) of every process this
# script has waited for. Wall times depend on whatever else shares the
# cores; CPU time much less. `times` runs in this shell (in a subshell it
# would see none of them), into a file.
cpu=0
cpu_ms() {
  local u s um us sm ss
  times > "$times.cpu"
  { read -r _ _; read -r u s; } < "$times.cpu"
  u=${u%s} s=${s%s}
  um=${u%%m*} us=${u#*m} sm=${s%%m*} ss=${s#*m}
  cpu=$(( (um + sm) * 60000 + 10#${us/./} + 10#${ss/./} ))
}
cpu_ms
cpu_mark=$cpu
# done_step STEP START: the step's wall time, split, and the CPU time
# since the previous step.
done_step() {
  local total=$(( $(stamp) - $2 )) compile=0
  [ -f "$times.$1" ] && compile=$(awk '{ s += $1 } END { print s }' "$times.$1")
  cpu_ms
  printf '%-20s %5ds: modules %4ds, compile and link %4ds; CPU %5ds\n' "$1" "$total" \
    $(( total - compile )) "$compile" $(( (cpu - cpu_mark) / 1000 )) \
    | tee -a "$times" | sed 's/^/    /'
  cpu_mark=$cpu
}

# --- etcd: wrapper module around etcdmain.Main --------------------------------
if ! have etcd; then
  echo "==> building etcd $ETCD_VERSION"
  t=$(stamp)
  d="$work/etcd"; rm -rf "$d"; mkdir -p "$d"; cp "$here/etcd/main.go" "$d/"
  ( cd "$d"
    go mod init pushgate.dev/controlplane/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy
    go_phased etcd go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .
  ) || fail "etcd build"
  done_step etcd "$t"
fi

# --- Kubernetes components: wrapper module replacing every staging module -----
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
missing=()
for c in "${k8s_cmds[@]}"; do have "$c" || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> building ${missing[*]} $K8S_VERSION"
  t=$(stamp)
  d="$work/k8s"; mkdir -p "$d"
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  staging_version="v0.${K8S_VERSION#v1.}"
  ( cd "$d"
    modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [ -f "$modfile" ] || fail "could not download go.mod of k8s.io/kubernetes@$K8S_VERSION"
    {
      echo "module pushgate.dev/controlplane/k8s"
      echo
      echo "go 1.24.0"
      echo
      echo "replace ("
      # Every staging module k8s.io/kubernetes replaces with ./staging/...
      sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$modfile"
      echo ")"
    } > go.mod
    cat > tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
    go get "k8s.io/kubernetes@$K8S_VERSION"
    pkg="k8s.io/component-base/version"
    cgo="k8s.io/client-go/pkg/version"
    ld="-s -w"
    for p in "$pkg" "$cgo"; do
      ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    pkgs=()
    for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    go_phased kubernetes go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$bin/" "${pkgs[@]}"
  ) || fail "kubernetes build (${missing[*]})"
  done_step kubernetes "$t"
fi

# --- kwok and helm: one wrapper module -------------------------------------
# kwok is the fake kubelet. It is still needed beside the real node: the
# control-plane tests read pod readiness back through the operator and the
# Deployment controller (a PushGateway's Ready and readyReplicas, the
# canary's weight, which the operator applies only once canary pods are
# ready, `helm install`'s available operator Deployment, the README's
# `rollout status` and `kubectl wait`). Without a kubelet those pods stay
# Pending; the real node is one per machine and kept for what must run.
# helm runs the chart tests (lint/template/install). Both pin the same
# Kubernetes minor (client-go 0.36.x), and neither go.mod has replace or
# exclude directives a wrapper module would miss: built from one module,
# the Kubernetes libraries, gRPC and OpenTelemetry they share compile once.
if ! have kwok || ! have helm; then
  echo "==> building kwok $KWOK_VERSION and helm $HELM_VERSION"
  t=$(stamp)
  d="$work/kwok-helm"; rm -rf "$d"; mkdir -p "$d"
  ( cd "$d"
    go mod init pushgate.dev/controlplane/kwok-helm >/dev/null 2>&1
    go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    hv="helm.sh/helm/v3/internal/version"
    # One `go build` of both (-o DIR/ names them), so each link overlaps
    # with what is left to compile; helm's -X names a package kwok lacks.
    go_phased kwok-helm go build -trimpath "$LEAN_GC" \
      -ldflags "-s -w -X $hv.version=$HELM_VERSION -X $hv.gitTreeState=clean" \
      -o "$bin/" sigs.k8s.io/kwok/cmd/kwok helm.sh/helm/v3/cmd/helm
  ) || fail "kwok and helm build"
  done_step kwok-helm "$t"
fi

# --- the real node: CNI plugins, a pause binary (CoreDNS is built with Prometheus)
if ! [ -x "$bin/cni/bridge" ] || ! [ -x "$bin/cni/portmap" ]; then
  echo "==> building CNI plugins $CNI_PLUGINS_VERSION"
  t=$(stamp)
  m="github.com/containernetworking/plugins/plugins"
  mkdir -p "$bin/cni"
  GOBIN="$bin/cni" GOFLAGS= go_phased cni go install -trimpath "$LEAN_GC" -ldflags "-s -w" \
    "$m/main/bridge@$CNI_PLUGINS_VERSION" "$m/ipam/host-local@$CNI_PLUGINS_VERSION" \
    "$m/main/loopback@$CNI_PLUGINS_VERSION" "$m/meta/portmap@$CNI_PLUGINS_VERSION" \
    || fail "CNI plugins build"
  done_step cni "$t"
fi
if ! have pause; then
  echo "==> building pause"
  t=$(stamp)
  d="$work/pause"; rm -rf "$d"; mkdir -p "$d"; cp "$here/pause/main.go" "$d/"
  ( cd "$d"
    go mod init pushgate.dev/controlplane/pause >/dev/null 2>&1
    go_phased pause go build -trimpath -ldflags "-s -w" -o "$bin/pause" .
  ) || fail "pause build"
  done_step pause "$t"
fi

# --- kwok stages: pod/node lifecycles from the same pinned module ------------
stages="$cache/$K8S_VERSION/kwok-stages.yaml"
if [ ! -s "$stages" ]; then
  src="$GOMODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  [ -d "$src" ] || GOFLAGS= go mod download "sigs.k8s.io/kwok@$KWOK_VERSION" || fail "downloading kwok stages"
  tmp="$stages.tmp"; : > "$tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/general/pod-create.yaml pod/general/pod-init-container-running.yaml \
           pod/general/pod-init-container-completed.yaml pod/general/pod-ready.yaml \
           pod/general/pod-complete.yaml pod/general/pod-delete.yaml; do
    [ -f "$src/$f" ] || fail "kwok stage $f not found in $src"
    { echo "---"; cat "$src/$f"; } >> "$tmp"
  done
  mv "$tmp" "$stages"
fi

# --- Prometheus, promcheck and CoreDNS; prometheus-adapter ------------------
# Prometheus and the metrics adapter serve what the HPAs read. The server is
# built without its web UI (that needs the builtinassets tag and an npm
# build); its HTTP API, /-/ready and /-/healthy are all the tests use. Of the
# service discoveries only Kubernetes is compiled in (Prometheus' own build
# tags), which keeps the cloud SDKs out of a cold build.
# promcheck (Prometheus' rule and PromQL parsers for the chart's alerts and
# queries, tests/controlplane/promcheck/main.go) and CoreDNS (the real
# node's cluster DNS, tests/controlplane/coredns/main.go) are packages of the
# same wrapper module, built by the same `go build` with the same flags:
# CoreDNS pins the same Kubernetes, gRPC and Prometheus client libraries as
# Prometheus, and what they share compiles once. Neither go.mod has replace
# or exclude directives a wrapper module would miss.
if ! have prometheus || ! have promcheck || ! have coredns; then
  echo "==> building prometheus $PROMETHEUS_RELEASE ($PROMETHEUS_VERSION), promcheck, coredns $COREDNS_VERSION"
  t=$(stamp)
  d="$work/prometheus"; rm -rf "$d"; mkdir -p "$d/promcheck" "$d/coredns"
  cp "$here/promcheck/main.go" "$d/promcheck/"
  cp "$here/coredns/main.go" "$d/coredns/"
  ( cd "$d"
    go mod init pushgate.dev/controlplane/prometheus >/dev/null 2>&1
    go get "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
      "github.com/coredns/coredns@$COREDNS_VERSION"
    pv="github.com/prometheus/common/version"
    # Three main packages and -o DIR/: the binaries are named after them.
    go_phased prometheus go build -trimpath "$LEAN_GC" -tags remove_all_sd,enable_kubernetes_sd \
      -ldflags "-s -w -X $pv.Version=$PROMETHEUS_RELEASE" \
      -o "$bin/" github.com/prometheus/prometheus/cmd/prometheus ./promcheck ./coredns
  ) || fail "prometheus, promcheck and coredns build"
  done_step prometheus "$t"
fi
if ! have prometheus-adapter; then
  echo "==> building prometheus-adapter $PROMETHEUS_ADAPTER_VERSION"
  t=$(stamp)
  d="$work/prometheus-adapter"; rm -rf "$d"; mkdir -p "$d"
  ( cd "$d"
    go mod init pushgate.dev/controlplane/prometheus-adapter >/dev/null 2>&1
    go get "sigs.k8s.io/prometheus-adapter/cmd/adapter@$PROMETHEUS_ADAPTER_VERSION"
    go_phased prometheus-adapter go build -trimpath "$LEAN_GC" -ldflags "-s -w" \
      -o "$bin/prometheus-adapter" sigs.k8s.io/prometheus-adapter/cmd/adapter
  ) || fail "prometheus-adapter build"
  done_step prometheus-adapter "$t"
fi

# --- KEDA: its CRDs, operator and metrics adapter ----------------------------
# KEDA's go.mod has replace and exclude directives, which a wrapper module
# (or `go install pkg@version`) would not apply: build inside a copy of the
# module itself, with its own go.mod and go.sum, trimmed to the triggers the
# tests use (every other scaler and its client library would be compiled
# and linked for nothing).
keda_src="$GOMODCACHE/github.com/kedacore/keda/v2@$KEDA_VERSION"
if [ ! -d "$keda_src" ]; then
  t=$(stamp)
  GOFLAGS= go mod download "github.com/kedacore/keda/v2@$KEDA_VERSION" || fail "downloading KEDA $KEDA_VERSION"
  done_step keda-source "$t"
fi
keda_crds="$cache/$K8S_VERSION/keda-crds"
if [ ! -s "$keda_crds/keda.sh_triggerauthentications.yaml" ]; then
  ls "$keda_src"/config/crd/bases/*.yaml >/dev/null || fail "KEDA's CRDs not found in $keda_src"
  rm -rf "$keda_crds.tmp"; mkdir -p "$keda_crds.tmp"
  cp "$keda_src"/config/crd/bases/*.yaml "$keda_crds.tmp/"
  rm -rf "$keda_crds"; mv "$keda_crds.tmp" "$keda_crds"
fi
if ! have keda-operator || ! have keda-adapter; then
  echo "==> building KEDA $KEDA_VERSION (operator, metrics adapter)"
  t=$(stamp)
  d="$work/keda"; rm -rf "$d"; cp -r "$keda_src" "$d"; chmod -R u+w "$d"
  # Only the triggers the tests use (and what they need): keda/trim.sh.
  bash "$here/keda/trim.sh" "$d" prometheus cpu memory external external-push external-mock \
    || fail "trimming KEDA's scalers"
  ( cd "$d"
    # One `go build` of both commands (named after their directories), so
    # the two links overlap with what is left to compile.
    mkdir -p out
    go_phased keda go build -trimpath "$LEAN_GC" -ldflags "-s -w" -o "$d/out/" ./cmd/operator ./cmd/adapter
    mv out/operator "$bin/keda-operator"
    mv out/adapter "$bin/keda-adapter"
  ) || fail "KEDA build"
  rm -rf "$d"
  done_step keda "$t"
fi

for c in etcd "${k8s_cmds[@]}" kwok helm promcheck prometheus prometheus-adapter keda-operator keda-adapter coredns pause cni/bridge cni/host-local cni/loopback cni/portmap; do
  have "$c" || fail "$bin/$c missing after build"
done
cpu_ms
echo "==> control plane ready in $(( $(stamp) - t_all ))s (CPU $(( cpu / 1000 ))s)"
if [ -s "$times" ]; then
  echo "==> steps built by this run:"
  sed 's/^/    /' "$times"
fi
echo "==> binaries:"
( cd "$bin" && ls -l etcd "${k8s_cmds[@]}" kwok helm promcheck prometheus prometheus-adapter keda-operator keda-adapter coredns pause cni/* | awk '{printf "    %-26s %6.1f MiB\n", $9, $5/1048576}' )
echo "$bin"
