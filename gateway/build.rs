//! Generates the `pushgate.v1` gRPC service, and the descriptor set that
//! reflection serves, from `proto/`. protox parses the proto in Rust, so a
//! build needs no `protoc` on the machine.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["pushgate/v1/pushgate.proto"], ["proto"])?;
    std::fs::write(out.join("pushgate_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
