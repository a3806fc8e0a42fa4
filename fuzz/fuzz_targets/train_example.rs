//! Training JSONL for the memory action head (`train-head`): each line parsed and checked; an
//! accepted example written back and parsed again is the same example.
#![no_main]

use athena::models::action_head::ActionHeadConfig;
use athena::train::data::parse_example;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = ActionHeadConfig::default();
    for line in String::from_utf8_lossy(data).lines() {
        if let Ok(example) = parse_example(line, &cfg) {
            let again = serde_json::to_string(&example).expect("an example serializes");
            assert_eq!(
                parse_example(&again, &cfg).as_ref(),
                Ok(&example),
                "{again}"
            );
        }
    }
});
