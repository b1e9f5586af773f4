//! Compiles the vendored Nomad and go-plugin protos (see `proto/README.md`).
//!
//! No system `protoc` is needed: the vendored one from `protoc-bin-vendored` is used unless `PROTOC`
//! is set in the environment.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &[
        "proto/plugins/base/proto/base.proto",
        "proto/plugins/drivers/proto/driver.proto",
        "proto/plugins/shared/hclspec/hcl_spec.proto",
        "proto/plugins/shared/structs/proto/attribute.proto",
        "proto/plugins/shared/structs/proto/recoverable_error.proto",
        "proto/go-plugin/grpc_controller.proto",
        "proto/go-plugin/grpc_stdio.proto",
    ];
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let well_known = protoc_bin_vendored::include_path()?;
    let well_known = well_known
        .to_str()
        .ok_or("protoc include path is not UTF-8")?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .include_file("protos.rs")
        .compile_with_config(config, PROTOS, &["proto", well_known])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
