//! The real node of `tests/cluster/up.sh` (kubelet, containerd, kube-proxy,
//! CoreDNS; as root) and the images it runs (`tests/cluster/images.sh`).

mod cluster_images;
mod cluster_pods;
