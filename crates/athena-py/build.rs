//! With the MLX backend compiled in (`athena/mlx`), puts libmlx's directory into the rpath of
//! the extension module, so that `import athena` finds libmlx without `LD_LIBRARY_PATH`. The
//! directory comes from athena's build script (`links = "mlx"` → `DEP_MLX_LIB_DIR`).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_MLX_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
