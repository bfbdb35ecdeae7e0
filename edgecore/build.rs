//! Compiles the vendored CRI v1 API (`proto/runtime/v1/api.proto`) with protox (no system
//! `protoc`) and tonic-prost-build: a client only, no server.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto/runtime/v1/api.proto");
    let fds = protox::compile(["runtime/v1/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
