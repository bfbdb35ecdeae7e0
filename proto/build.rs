//! Compiles `kedge.proto` with protox (no system `protoc`) and prost-build.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=kedge.proto");
    let fds = protox::compile(["kedge.proto"], ["."])?;
    prost_build::Config::new()
        // Deterministic encoding of map fields (NodeInfo capacity, labels).
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}
