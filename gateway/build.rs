//! Two jobs, both with no manual step and no tool to install:
//!
//! 1. **gRPC code.** `proto/inference.proto` (the Open Inference Protocol's
//!    `inference.GRPCInferenceService`) is compiled by `protox`, a protobuf compiler written in
//!    Rust, so no `protoc` is downloaded or needed; tonic's prost codegen turns it into the
//!    messages, the server trait and the client (`$OUT_DIR/inference.rs`). A failure here is a
//!    build error that says what went wrong in the `.proto`.
//! 2. **ONNX Runtime.** Makes its shared library available to every binary this workspace builds:
//!    `ort` is built with `load-dynamic`, so the library is found at run time.
//!
//! - `ORT_DYLIB_PATH` set at build time: nothing is fetched; that path is compiled in as the
//!   fallback (the variable, when set at run time, always wins anyway).
//! - Otherwise the official `onnxruntime` wheel (or `onnxruntime-gpu` with the `cuda` feature) is
//!   fetched once from PyPI with `python3 -m pip download`, its `libonnxruntime*.so*` files are
//!   cached under `<target>/onnxruntime/`, and copied beside the binaries (`target/<profile>/`
//!   and `target/<profile>/deps/`, where test and bench binaries live).
//!
//! A failure here is a warning, not a build error: the gateway then reports at start-up exactly
//! which library it could not load and how to fix it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ORT_VERSION: &str = "1.31.1";

/// The service definition, relative to this crate's root.
const PROTO: &str = "proto/inference.proto";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={PROTO}");
    if let Err(problem) = generate_grpc() {
        println!("cargo::error=could not generate the gRPC code from {PROTO}: {problem}");
    }
    println!("cargo:rerun-if-env-changed=ORT_DYLIB_PATH");
    println!("cargo:rerun-if-env-changed=PYTHON");
    if let Some(path) = env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        emit(Path::new(&path));
        return;
    }
    match provide() {
        Ok(lib) => {
            println!("cargo:rerun-if-changed={}", lib.display());
            emit(&lib);
        }
        Err(problem) => {
            println!("cargo:warning=could not fetch ONNX Runtime {ORT_VERSION}: {problem}");
            println!(
                "cargo:warning=the gateway will not start until it can load libonnxruntime.so; \
                 set ORT_DYLIB_PATH to one (from PyPI's onnxruntime=={ORT_VERSION} wheel, onnxruntime/capi/)"
            );
        }
    }
}

/// Parses and checks the `.proto` in pure Rust, then writes the messages (bytes fields as
/// `bytes::Bytes`, so raw tensor contents are not copied out of the receive buffer), the
/// server trait and the client.
fn generate_grpc() -> Result<(), String> {
    let descriptors = protox::compile([PROTO], ["proto"]).map_err(|e| format!("{e:?}"))?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".inference")
        .compile_fds(descriptors)
        .map_err(|e| e.to_string())
}

/// Tells the crate where the library is, as the last place to look at run time.
fn emit(lib: &Path) {
    println!("cargo:rustc-env=GATEWAY_ORT_DYLIB={}", lib.display());
}

fn provide() -> Result<PathBuf, String> {
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<package>-<hash>/out
    let profile_dir = out_dir.ancestors().nth(3).ok_or("unexpected OUT_DIR layout")?.to_path_buf();
    let target_dir = profile_dir.parent().ok_or("unexpected OUT_DIR layout")?;
    let (package, platform) = wheel()?;
    let cache = target_dir.join("onnxruntime").join(format!("{package}-{ORT_VERSION}-{platform}"));
    let lib = cache.join(format!("libonnxruntime.so.{ORT_VERSION}"));
    if !lib.exists() {
        fetch(&package, &platform, &cache)?;
    }
    for dir in [profile_dir.clone(), profile_dir.join("deps")] {
        place(&cache, &dir)?;
    }
    Ok(lib)
}

/// The wheel to fetch for this target: its package name and platform tag.
fn wheel() -> Result<(String, String), String> {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os != "linux" {
        return Err(format!("no automatic fetch for target os `{os}`; set ORT_DYLIB_PATH"));
    }
    let package = if env::var_os("CARGO_FEATURE_CUDA").is_some() { "onnxruntime-gpu" } else { "onnxruntime" };
    Ok((package.to_string(), format!("manylinux_2_28_{arch}")))
}

/// Downloads the wheel and unpacks its ONNX Runtime libraries into `cache`, atomically.
fn fetch(package: &str, platform: &str, cache: &Path) -> Result<(), String> {
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let staging = cache.with_extension(format!("partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"])
        .args(["--platform", platform, "--python-version", "3.11", "--dest"])
        .arg(&staging)
        .arg(format!("{package}=={ORT_VERSION}"))
        .status()
        .map_err(|e| format!("running `{python} -m pip download`: {e}"))?;
    if !status.success() {
        return Err(format!("`{python} -m pip download {package}=={ORT_VERSION}` failed ({status})"));
    }
    let unpack = "import glob, os, sys, zipfile\n\
        dest = sys.argv[1]\n\
        wheel = glob.glob(os.path.join(dest, '*.whl'))[0]\n\
        with zipfile.ZipFile(wheel) as z:\n\
        \x20   for name in z.namelist():\n\
        \x20       base = os.path.basename(name)\n\
        \x20       if name.startswith('onnxruntime/capi/libonnxruntime') and '.so' in base:\n\
        \x20           with open(os.path.join(dest, base), 'wb') as f:\n\
        \x20               f.write(z.read(name))\n\
        os.remove(wheel)\n";
    let status = Command::new(&python)
        .args(["-c", unpack])
        .arg(&staging)
        .status()
        .map_err(|e| format!("unpacking the wheel: {e}"))?;
    if !status.success() {
        return Err(format!("unpacking the {package} wheel failed ({status})"));
    }
    let _ = fs::remove_dir_all(cache);
    fs::rename(&staging, cache).map_err(|e| format!("moving the library into {}: {e}", cache.display()))
}

/// Copies the cached libraries into `dir`, the main one as `libonnxruntime.so` (the name `ort`
/// looks for beside the executable). Provider libraries keep their names: ONNX Runtime looks for
/// them beside itself.
fn place(cache: &Path, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let entries = fs::read_dir(cache).map_err(|e| format!("reading {}: {e}", cache.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let target_name =
            if name.starts_with("libonnxruntime.so.") { "libonnxruntime.so".to_string() } else { name };
        let target = dir.join(target_name);
        let source_len = entry.metadata().map(|m| m.len()).ok();
        if fs::metadata(&target).map(|m| m.len()).ok() == source_len {
            continue;
        }
        let temp = target.with_extension(format!("tmp-{}", std::process::id()));
        fs::copy(entry.path(), &temp).map_err(|e| format!("copying into {}: {e}", dir.display()))?;
        fs::rename(&temp, &target).map_err(|e| format!("placing {}: {e}", target.display()))?;
    }
    Ok(())
}
