//! `tests/cluster/images.sh` builds the images the real node runs without
//! Docker; the Dockerfiles build the ones users run. This checks that both
//! describe the same runtime image: base, user, ports, entrypoint, command,
//! where the binary lands, and no shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use pushgate_e2e::cluster::repo;
use pushgate_e2e::controlplane::bin_dir;
use pushgate_e2e::process::run_ok;
use serde_json::Value;

/// The final stage of a Dockerfile: its `FROM` and its instructions.
struct Stage {
    from: String,
    lines: Vec<(String, String)>,
}

impl Stage {
    fn parse(path: &Path) -> Stage {
        let text = std::fs::read_to_string(path).unwrap();
        let mut stage = None;
        for l in text.lines().map(str::trim) {
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
            if op == "FROM" {
                stage = Some(Stage {
                    from: rest.to_owned(),
                    lines: Vec::new(),
                });
            } else if let Some(s) = stage.as_mut() {
                s.lines.push((op.to_owned(), rest.to_owned()));
            }
        }
        stage.expect("a FROM")
    }

    fn get(&self, op: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(o, _)| o == op)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self, op: &str) -> Value {
        self.get(op)
            .map(|v| serde_json::from_str(v).unwrap())
            .unwrap_or(Value::Array(vec![]))
    }
}

/// An unpacked OCI image layout: its config and its single layer's files.
struct Image {
    config: Value,
    rootfs: tempfile::TempDir,
}

impl Image {
    fn unpack(tar: &Path) -> Image {
        let layout = tempfile::tempdir().unwrap();
        untar(tar, layout.path());
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap();
            layout.path().join("blobs/sha256").join(hex)
        };
        let read =
            |p: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
        let index = read(layout.path().join("index.json"));
        let manifest = read(blob(index["manifests"][0]["digest"].as_str().unwrap()));
        let config = read(blob(manifest["config"]["digest"].as_str().unwrap()));
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "one layer");
        let rootfs = tempfile::tempdir().unwrap();
        untar(&blob(layers[0]["digest"].as_str().unwrap()), rootfs.path());
        Image { config, rootfs }
    }
}

fn untar(tar: &Path, into: &Path) {
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar");
    assert!(st.success(), "tar -xf {}", tar.display());
}

#[test]
fn images_sh_builds_what_the_dockerfiles_describe() {
    let out = tempfile::tempdir().unwrap();
    // The debug binaries of this build stand in for the release ones: the
    // layout, not the code, is under test.
    let bins = pushgate_e2e::gateway::binary().parent().unwrap().to_owned();
    let pause = bin_dir().unwrap().join("pause");
    let run = run_ok(
        Command::new("bash")
            .arg(repo().join("tests/cluster/images.sh"))
            .arg(out.path())
            .arg(&bins)
            .env("PUSHGATE_PAUSE_BIN", &pause),
    );
    let listed = String::from_utf8(run.stdout).unwrap();

    for (dockerfile, name, binary) in [
        ("gateway/Dockerfile", "pushgate", "pushgate"),
        (
            "operator/Dockerfile",
            "pushgate-operator",
            "pushgate-operator",
        ),
    ] {
        let stage = Stage::parse(&repo().join(dockerfile));
        assert_eq!(
            stage.from, "gcr.io/distroless/cc-debian12:nonroot",
            "images.sh assembles distroless/cc nonroot: {dockerfile} changed base"
        );
        let image = Image::unpack(&out.path().join(format!("{name}.oci.tar")));
        let cfg = &image.config["config"];
        assert!(
            listed.contains(&format!("ghcr.io/pushgate/{name}:0.1.0 ")),
            "{listed}"
        );
        assert_eq!(cfg["User"], stage.get("USER").unwrap(), "{dockerfile} USER");
        assert_eq!(cfg["Entrypoint"], stage.json("ENTRYPOINT"), "{dockerfile}");
        assert_eq!(cfg["Cmd"], stage.json("CMD"), "{dockerfile} CMD");
        let mut exposed: Vec<String> = cfg["ExposedPorts"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        exposed.sort();
        let mut want: Vec<String> = stage
            .get("EXPOSE")
            .unwrap()
            .split_whitespace()
            .map(|p| format!("{p}/tcp"))
            .collect();
        want.sort();
        assert_eq!(exposed, want, "{dockerfile} EXPOSE");
        let copy_dest = stage
            .get("COPY")
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned();
        assert_eq!(copy_dest, format!("/usr/local/bin/{binary}"));
        let root = image.rootfs.path();
        let bin = root.join(copy_dest.trim_start_matches('/'));
        assert!(bin.is_file(), "{} in the image", bin.display());
        assert!(!root.join("bin/sh").exists(), "{name} has a shell");
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
        assert!(root.join("etc/ssl/certs/ca-certificates.crt").is_file());
        // Every library the binary links is in the image.
        let ldd = Command::new("ldd").arg(&bin).output().unwrap();
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            assert!(
                root.join(lib.trim_start_matches('/')).exists(),
                "{name} lacks {lib}"
            );
        }
    }
}
