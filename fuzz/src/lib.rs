//! What the fuzz targets share: the repository's fixtures and a scratch directory per process.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// A directory of the repository's fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(rel)
}

/// The fixture model's parsed `config.json` (the model the LoRA fixtures adapt).
pub fn base_args() -> &'static athena::checkpoint::OlmoeArgs {
    static ARGS: LazyLock<athena::checkpoint::OlmoeArgs> = LazyLock::new(|| {
        athena::checkpoint::OlmoeArgs::from_file(&fixture("models/base/config.json"))
            .expect("the base fixture's config parses")
    });
    &ARGS
}

/// The directory `name` under this process's scratch space (in memory where `/dev/shm`
/// exists), created on first use; what a target writes there stays until it overwrites it.
pub fn scratch(name: &str) -> PathBuf {
    static ROOT: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
        let shm = Path::new("/dev/shm");
        match shm.is_dir() {
            true => tempfile::tempdir_in(shm),
            false => tempfile::tempdir(),
        }
        .expect("a temporary directory")
    });
    let dir = ROOT.path().join(name);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// Writes `bytes` to `dir/name`.
pub fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write a scratch file");
}

/// Copies fixture file `rel` into `dir`, unless it is there already.
pub fn copy_fixture(dir: &Path, rel: &str) {
    let src = fixture(rel);
    let dst = dir.join(src.file_name().expect("a file name"));
    if !dst.exists() {
        std::fs::copy(&src, dst).expect("copy a fixture");
    }
}
