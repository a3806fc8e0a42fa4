//! Builds the C ABI shim over MLX (`csrc/`) when the `mlx` feature is on, and links it against
//! the `libmlx` that the `mlx` Python package ships (Linux: `pip install mlx-cpu`; macOS:
//! `pip install mlx`). MLX is found through `MLX_DIR` (the package directory, holding
//! `include/` and `lib/`) or by asking `python3` where `mlx` is installed. The library
//! directory goes into the rpath of this crate's tests and, through `DEP_MLX_LIB_DIR`, of the
//! `athena` binary, so nothing needs `LD_LIBRARY_PATH`.
//!
//! It also tells the tests which instruction-set extensions the host CPU has
//! ([`host_cpu_cfgs`]), so that a kernel test this CPU cannot run is reported as ignored,
//! with the reason, rather than passing without running.

use std::path::{Path, PathBuf};
use std::process::Command;

const HOW_TO_INSTALL: &str = "install MLX and point MLX_DIR at it:
    python3 -m venv ~/.cache/athena/mlx-venv
    ~/.cache/athena/mlx-venv/bin/pip install mlx==0.32.4 mlx-cpu==0.32.4   # Linux (CPU)
    ~/.cache/athena/mlx-venv/bin/pip install mlx==0.32.4                   # macOS (Metal)
    export MLX_DIR=$(~/.cache/athena/mlx-venv/bin/python -c 'import mlx; print(mlx.__path__[0])')
or build without `--features mlx`";

fn main() {
    host_cpu_cfgs();
    println!("cargo:rerun-if-env-changed=MLX_DIR");
    println!("cargo:rerun-if-changed=csrc/athena_mlx.cpp");
    println!("cargo:rerun-if-changed=csrc/athena_mlx.h");
    if std::env::var_os("CARGO_FEATURE_MLX").is_none() {
        return;
    }
    let dir = match locate() {
        Ok(dir) => dir,
        Err(why) => {
            eprintln!("error: the `mlx` feature needs MLX's C++ library: {why}\n{HOW_TO_INSTALL}");
            std::process::exit(1);
        }
    };
    let include = dir.join("include");
    let lib = dir.join("lib");
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .file("csrc/athena_mlx.cpp")
        .include(&include)
        .include("csrc")
        .warnings(false)
        .compile("athena_mlx");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // For dependents' build scripts (DEP_MLX_LIB_DIR): the athena binary's rpath.
    println!("cargo:lib_dir={}", lib.display());
}

/// The `mlx` package directory: `MLX_DIR`, else where `python3` imports `mlx` from.
fn locate() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("MLX_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = Command::new("python3")
                .args(["-c", "import mlx; print(list(mlx.__path__)[0])"])
                .output()
                .map_err(|e| format!("MLX_DIR is not set and python3 could not be run: {e}"))?;
            if !out.status.success() {
                return Err("MLX_DIR is not set and `python3 -c 'import mlx'` failed".into());
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    check(&dir)?;
    Ok(dir)
}

fn check(dir: &Path) -> Result<(), String> {
    let header = dir.join("include/mlx/mlx.h");
    if !header.is_file() {
        return Err(format!("{} is missing (MLX headers)", header.display()));
    }
    let lib = dir.join("lib");
    if !["libmlx.so", "libmlx.dylib"]
        .iter()
        .any(|f| lib.join(f).is_file())
    {
        return Err(format!(
            "no libmlx.so or libmlx.dylib in {} (on Linux, `pip install mlx-cpu` provides it)",
            lib.display()
        ));
    }
    Ok(())
}

/// The cfgs for the host CPU's extensions that the kernels choose at run time, set when the
/// crate is built for the host itself (none when cross-compiling): `athena_host_avx2_fma`,
/// `athena_host_avx512` (F, BW, VL), `athena_host_avx512_vnni` (F, BW, VNNI) and
/// `athena_host_avx512_bf16` (F, BW, VL, BF16), the same sets as `athena::kernels::has_*`.
fn host_cpu_cfgs() {
    for cfg in HOST_CPU_CFGS {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
    }
    if std::env::var_os("HOST") != std::env::var_os("TARGET") {
        return;
    }
    for cfg in host_cpu_features() {
        println!("cargo:rustc-cfg={cfg}");
    }
}

const HOST_CPU_CFGS: [&str; 4] = [
    "athena_host_avx2_fma",
    "athena_host_avx512",
    "athena_host_avx512_vnni",
    "athena_host_avx512_bf16",
];

#[cfg(target_arch = "x86_64")]
fn host_cpu_features() -> Vec<&'static str> {
    let has = |f: &[bool]| f.iter().all(|&b| b);
    let avx512 = has(&[
        is_x86_feature_detected!("avx512f"),
        is_x86_feature_detected!("avx512bw"),
        is_x86_feature_detected!("avx512vl"),
    ]);
    let checks = [
        has(&[
            is_x86_feature_detected!("avx2"),
            is_x86_feature_detected!("fma"),
        ]),
        avx512,
        has(&[
            is_x86_feature_detected!("avx512f"),
            is_x86_feature_detected!("avx512bw"),
            is_x86_feature_detected!("avx512vnni"),
        ]),
        avx512 && is_x86_feature_detected!("avx512bf16"),
    ];
    HOST_CPU_CFGS
        .into_iter()
        .zip(checks)
        .filter_map(|(cfg, on)| on.then_some(cfg))
        .collect()
}

#[cfg(not(target_arch = "x86_64"))]
fn host_cpu_features() -> Vec<&'static str> {
    Vec::new()
}
