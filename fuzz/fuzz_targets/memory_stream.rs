//! A memory stream file (`memory eval`): JSONL facts checked against their own ground truth.
//! An accepted stream written back and read again is the same stream.
#![no_main]

use athena::memory::eval::stream::{read_stream, write_stream};
use athena_fuzz::{put, scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("stream");
    put(&dir, "stream.jsonl", data);
    if let Ok(facts) = read_stream(&dir.join("stream.jsonl")) {
        let again = dir.join("again.jsonl");
        write_stream(&again, &facts).expect("a read stream writes");
        assert_eq!(read_stream(&again).expect("a written stream reads"), facts);
    }
});
