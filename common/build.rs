//! Compiles the wire contract with protox (pure Rust), so no protoc is needed on the
//! build machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "../proto/ridgeline/v1/common.proto",
        "../proto/ridgeline/v1/worker.proto",
        "../proto/ridgeline/v1/client.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
