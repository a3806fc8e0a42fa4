//! A `model.safetensors` file: header length, JSON header, dtypes, shapes, offsets.
#![no_main]

use athena_fuzz::{put, scratch};
use candle_core::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("st");
    put(&dir, "model.safetensors", data);
    let Ok(files) = athena::checkpoint::WeightFiles::open(&dir) else {
        return;
    };
    // Whatever opened is consistent: every tensor loads with the shape the header gave.
    let names: Vec<String> = files.names().map(str::to_owned).collect();
    for name in names {
        let shape = files
            .shape(&name)
            .expect("listed tensors have shapes")
            .to_vec();
        files.dtype(&name).expect("listed tensors have dtypes");
        if let Ok(t) = files.load(&name, &Device::Cpu) {
            assert_eq!(t.dims(), shape.as_slice(), "{name}");
        }
    }
});
