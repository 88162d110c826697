#!/usr/bin/env bash
# Assembles the pushgate and pushgate-operator OCI images from the release
# binaries, without Docker, with the runtime layout of gateway/Dockerfile and
# operator/Dockerfile (distroless/cc-debian12:nonroot): the binary under
# /usr/local/bin, the glibc/libgcc libraries it links, CA certificates,
# /etc/passwd with nonroot (65532), /tmp, no shell. Also the sandbox ("pause")
# image of the test node. tests/tests/node/cluster_images.rs checks that each
# Dockerfile and this script describe the same image.
#
# Usage: bash tests/cluster/images.sh OUT_DIR [BIN_DIR]
#   BIN_DIR holds pushgate and pushgate-operator (default: the cargo release dir).
# Writes OUT_DIR/<name>.oci.tar (OCI image layouts, uncompressed layers), named
# with the chart's default image names, and prints one "ref file" line each.
# Import: ctr -n k8s.io images import OUT_DIR/<name>.oci.tar
set -euo pipefail

out="${1:?usage: images.sh OUT_DIR [BIN_DIR]}"
bin="${2:-${CARGO_TARGET_DIR:-target}/release}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../../Cargo.toml" | head -1)"
pause="${PUSHGATE_PAUSE_BIN:-${PUSHGATE_K8S_CACHE:-$HOME/.cache/pushgate-k8s}/v1.34.4/bin/pause}"
fail() { echo "cluster/images.sh: FAILED: $*" >&2; exit 1; }
for f in "$bin/pushgate" "$bin/pushgate-operator" "$pause"; do
  [ -x "$f" ] || fail "$f missing (cargo build --release -p gateway -p operator; bash tests/controlplane/build.sh)"
done
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# A JSON array of strings from the arguments (none contains a quote or backslash).
json_list() { local s="" a; for a in "$@"; do s="$s${s:+,}\"$a\""; done; printf '[%s]' "$s"; }

# The distroless/cc-debian12 runtime: libc, libgcc, CA certificates, the users.
base_rootfs() {
  local root="$1" lib
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/usr/local/bin"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$root/etc/group"
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  chown 65532:65532 "$root/home/nonroot"
}

# Copies the shared libraries `ldd` lists for $2 (and the loader) into $1.
libs_of() {
  local root="$1" elf="$2" lib
  for lib in $(ldd "$elf" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

# image NAME REF ROOTFS USER ENTRYPOINT_JSON CMD_JSON PORTS...
image() {
  local name="$1" ref="$2" root="$3" user="$4" entry="$5" cmd="$6"; shift 6
  local d="$work/$name" ports="" p
  mkdir -p "$d/blobs/sha256"
  # Reproducible layer: sorted, fixed times, numeric owners as set in ROOTFS.
  tar --sort=name --mtime=@0 --numeric-owner --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$d/layer.tar" .
  local layer; layer="$(sha "$d/layer.tar")"
  mv "$d/layer.tar" "$d/blobs/sha256/$layer"
  for p in "$@"; do ports="$ports${ports:+,}\"$p/tcp\":{}"; done
  printf '{"architecture":"amd64","os":"linux","config":{"User":"%s","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"Entrypoint":%s,"Cmd":%s,"ExposedPorts":{%s},"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"tests/cluster/images.sh"}]}' \
    "$user" "$entry" "$cmd" "$ports" "$layer" > "$d/config.json"
  local config; config="$(sha "$d/config.json")"
  local config_size; config_size="$(size "$d/config.json")"
  local layer_size; layer_size="$(size "$d/blobs/sha256/$layer")"
  mv "$d/config.json" "$d/blobs/sha256/$config"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" > "$d/manifest.json"
  local manifest; manifest="$(sha "$d/manifest.json")"
  local manifest_size; manifest_size="$(size "$d/manifest.json")"
  mv "$d/manifest.json" "$d/blobs/sha256/$manifest"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$manifest_size" "$ref" "${ref##*:}" > "$d/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$d/oci-layout"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$out/$name.oci.tar" oci-layout index.json blobs
  echo "$ref $out/$name.oci.tar"
}

# gateway/Dockerfile
root="$work/rootfs-gateway"
base_rootfs "$root"
install -m 0755 "$bin/pushgate" "$root/usr/local/bin/pushgate"
libs_of "$root" "$bin/pushgate"
image pushgate "ghcr.io/pushgate/pushgate:$version" "$root" "65532:65532" \
  "$(json_list /usr/local/bin/pushgate)" \
  "$(json_list serve --listen 0.0.0.0:8080 --metrics-listen 0.0.0.0:9090 --data-dir /var/lib/pushgate)" \
  8080 9090

# operator/Dockerfile
root="$work/rootfs-operator"
base_rootfs "$root"
install -m 0755 "$bin/pushgate-operator" "$root/usr/local/bin/pushgate-operator"
libs_of "$root" "$bin/pushgate-operator"
image pushgate-operator "ghcr.io/pushgate/pushgate-operator:$version" "$root" "65532:65532" \
  "$(json_list /usr/local/bin/pushgate-operator)" "[]" 8081

# The node's sandbox image: the static pause binary alone.
root="$work/rootfs-pause"
mkdir -p "$root"
install -m 0755 "$pause" "$root/pause"
image pause "pushgate.local/pause:1" "$root" "65535:65535" "$(json_list /pause)" "[]"
