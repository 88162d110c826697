//! Generates the `pushgate.v1` messages and client, the descriptor set that
//! reflection serves, and the server, from `proto/`. protox parses the proto
//! in Rust, so a build needs no `protoc` on the machine.
//!
//! The server is declared here rather than generated from the proto so that
//! `Subscribe` can send messages that are already encoded: an event's
//! message is encoded once and shared by every stream it goes to, as its SSE
//! block is. Its routes, types and wire format are the proto's.

use prost::Message;
use tonic_build::manual::{Builder, Method, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["pushgate/v1/pushgate.proto"], ["proto"])?;
    std::fs::write(out.join("pushgate_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    let proto = "crate::edges::grpc::proto";
    let service = Service::builder()
        .name("Pushgate")
        .package("pushgate.v1")
        .comment("The pushgate.v1.Pushgate service of proto/pushgate/v1/pushgate.proto.")
        .method(
            Method::builder()
                .name("subscribe")
                .route_name("Subscribe")
                .comment("Streams events of the requested topics, each an encoded `Event`.")
                .input_type(format!("{proto}::SubscribeRequest"))
                .output_type("crate::edges::grpc::codec::Encoded")
                .codec_path("crate::edges::grpc::codec::SubscribeCodec")
                .server_streaming()
                .build(),
        )
        .method(
            Method::builder()
                .name("publish")
                .route_name("Publish")
                .comment("Stores one event and hands it to its subscribers.")
                .input_type(format!("{proto}::PublishRequest"))
                .output_type(format!("{proto}::PublishResponse"))
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        )
        .build();
    Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[service]);
    Ok(())
}
