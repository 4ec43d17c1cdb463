//! Compiles the `.proto` schema with protox (protoc in pure Rust: nothing to install), generates
//! the prost types, and the serde impls of the proto3 JSON mapping with pbjson.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/outpost/config/v1/config.proto",
        "proto/outpost/gslb/v1/gslb.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("descriptors.bin");
    let fds = protox::compile(protos, ["proto"])?;
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;
    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&protos, &["proto"])?;
    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".outpost"])?;

    // The control plane's gRPC service, with tonic; it reuses the config types above.
    let controlplane = "proto/outpost/controlplane/v1/controlplane.proto";
    println!("cargo:rerun-if-changed={controlplane}");
    let tonic_out = out.join("tonic");
    std::fs::create_dir_all(&tonic_out)?;
    tonic_prost_build::configure()
        .out_dir(&tonic_out)
        .extern_path(".outpost.config.v1", "crate::config::v1")
        .extern_path(".outpost.gslb.v1", "crate::gslb::v1")
        .compile_fds(protox::compile([controlplane], ["proto"])?)?;
    Ok(())
}
