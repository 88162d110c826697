//! Writes the PushGateway CRD YAML (default `crds/pushgate.dev_pushgateways.yaml`).

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| operator::CRD_PATH.to_string());
    std::fs::write(&path, operator::crd_yaml()?)?;
    eprintln!("wrote {path}");
    Ok(())
}
