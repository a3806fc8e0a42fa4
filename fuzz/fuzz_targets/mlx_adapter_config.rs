//! An mlx-lm `adapter_config.json` (`lora_parameters`: rank, scale, keys; `num_layers`)
//! beside the weights of the `mlx_all` fixture, loaded against the fixture model.
#![no_main]

use athena_fuzz::{base_args, copy_fixture, put, scratch};
use candle_core::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("adapter");
    copy_fixture(&dir, "lora/mlx_all/adapters.safetensors");
    put(&dir, "adapter_config.json", data);
    if let Ok(adapter) = athena::lora::LoraAdapter::load(&dir, base_args(), &Device::Cpu) {
        // A loaded adapter changes something, with a finite scale.
        assert!(!adapter.is_empty());
        for d in adapter.deltas.values() {
            assert!(d.scale.is_finite());
        }
    }
});
