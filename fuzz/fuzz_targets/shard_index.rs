//! `model.safetensors.index.json` beside the real shards of the sharded fixture: paths that
//! leave the directory, missing shards, duplicate or unknown tensors.
#![no_main]

use athena_fuzz::{copy_fixture, put, scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("shards");
    for i in 1..=3 {
        copy_fixture(
            &dir,
            &format!("models/sharded_f16/model-0000{i}-of-00003.safetensors"),
        );
    }
    put(&dir, "model.safetensors.index.json", data);
    if let Ok(files) = athena::checkpoint::WeightFiles::open(&dir) {
        // Every tensor it maps lives in a file inside the directory.
        for name in files.names() {
            let path = files.path_of(name).expect("mapped tensors have a file");
            assert!(path.starts_with(&dir), "{}", path.display());
        }
    }
});
