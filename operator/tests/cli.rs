//! The shipped binaries start and `crdgen` writes exactly the committed CRD.
//! (Also makes `cargo test --workspace` build the binaries the e2e tests run.)

use std::process::Command;

#[test]
fn crdgen_writes_the_committed_crd() {
    let out = tempfile_path("crd.yaml");
    let status = Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/pushgate.dev_pushgateways.yaml"
    ))
    .unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), committed);
    let _ = std::fs::remove_file(out);
}

#[test]
fn operator_help_lists_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate-operator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--metrics-listen", "--lease-name", "--namespace"] {
        assert!(help.contains(flag), "missing {flag} in:\n{help}");
    }
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pushgate-crdgen-{}-{name}", std::process::id()))
}
