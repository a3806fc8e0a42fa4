//! Inputs the loader must refuse: malformed safetensors files, sharded indexes
//! that disagree with their shards or leave the model directory, checkpoints that do not match
//! config.json, and invalid configs. Each case corrupts one thing in a copy of a fixture and
//! expects an error, not a panic, that names the file (and the tensor) at fault and says what
//! is wrong.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use athena::backend::candle::load_olmoe;
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Records the largest single allocation made by this test binary, so that a header declaring
/// a huge tensor can be shown not to cause one.
struct TrackLargest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for TrackLargest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: TrackLargest = TrackLargest;

/// No test here loads anything near this size; a larger allocation means a declared size was
/// trusted.
const ALLOCATION_LIMIT: usize = 1 << 30;

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
const EMBED: &str = "model.embed_tokens.weight";
const SHARD1: &str = "model-00001-of-00003.safetensors";
const SHARD2: &str = "model-00002-of-00003.safetensors";
const SHARD3: &str = "model-00003-of-00003.safetensors";

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A copy of fixture `name` in a fresh temporary directory.
fn copy_fixture(name: &str) -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&common::fixture(name), tmp.path());
    tmp
}

/// A copy of fixture `name` in `<tmp>/model`, so that `<tmp>` is outside the model directory.
fn nested_fixture(name: &str) -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    copy_dir(&common::fixture(name), &dir);
    (tmp, dir)
}

/// Loads `dir` expecting an error; fails the test on success or on a panic.
fn load_err(dir: &Path) -> String {
    let result = std::panic::catch_unwind(|| {
        load_olmoe(dir, &Device::Cpu, DType::F32, |_, _| {}).map(|_| ())
    });
    match result {
        Err(_) => panic!(
            "loading {} panicked instead of returning an error",
            dir.display()
        ),
        Ok(Ok(())) => panic!("loading {} succeeded", dir.display()),
        Ok(Err(e)) => e.to_string(),
    }
}

/// Asserts that loading `dir` fails with a message containing every one of `needles`.
fn refused(dir: &Path, needles: &[&str]) -> String {
    let msg = load_err(dir);
    println!("{msg}");
    for needle in needles {
        assert!(
            msg.contains(needle),
            "expected `{needle}` in the error: {msg}"
        );
    }
    msg
}

/// Raw safetensors bytes: the 8-byte little-endian header length, the header, the data.
fn raw(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(data);
    bytes
}

/// The base fixture with `model.safetensors` replaced by `bytes`.
fn with_weights(bytes: &[u8]) -> TempDir {
    let tmp = copy_fixture("base");
    fs::write(tmp.path().join(SINGLE), bytes).unwrap();
    tmp
}

/// Asserts that `bytes` as `model.safetensors` is refused with an error naming the file and
/// containing `needles`.
fn bad_file(bytes: &[u8], needles: &[&str]) -> String {
    let tmp = with_weights(bytes);
    let msg = refused(tmp.path(), needles);
    assert!(
        msg.contains(SINGLE),
        "the error does not name the file: {msg}"
    );
    msg
}

/// Rewrites the safetensors file at `path` after `edit` changes its tensors.
fn edit_tensors(path: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, path).unwrap();
}

/// Rewrites the JSON file at `path` after `edit` changes it.
fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Rewrites the `weight_map` of the sharded index in `dir`.
fn edit_weight_map(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    edit_json(&dir.join(INDEX), |v| {
        edit(v["weight_map"].as_object_mut().unwrap())
    });
}

// ---------------------------------------------------------------------------------------------
// safetensors files

#[test]
fn file_shorter_than_8_bytes() {
    bad_file(b"", &["shorter than the 8-byte header length"]);
    bad_file(
        &[5, 0, 0, 0, 0],
        &["5 bytes, shorter than the 8-byte header length"],
    );
}

#[test]
fn header_length_over_100_mb() {
    let mut bytes = (200_000_000u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    bad_file(&bytes, &["header length 200000000", "larger than 100 MB"]);
    // A length that does not even fit in memory is refused the same way.
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    bad_file(&bytes, &["larger than 100 MB"]);
}

#[test]
fn header_length_past_end_of_file() {
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\":1}");
    bad_file(
        &bytes,
        &[
            "header length 1000",
            "runs past the end of the file (15 bytes)",
        ],
    );
}

#[test]
fn header_not_utf8() {
    bad_file(&raw(b"{\"\xff\xfe\":1}", b""), &["header is not UTF-8"]);
}

#[test]
fn header_not_json() {
    bad_file(
        &raw(b"hello, world", b""),
        &["header is not valid safetensors JSON"],
    );
    // JSON, but not a map of tensor entries.
    bad_file(
        &raw(b"[1, 2, 3]", b""),
        &["header is not valid safetensors JSON"],
    );
}

#[test]
fn unknown_dtype() {
    let header = format!(r#"{{"{EMBED}":{{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}}}"#);
    bad_file(
        &raw(header.as_bytes(), &[0; 2]),
        &[EMBED, "unknown variant `Q4`"],
    );
}

#[test]
fn shape_product_overflow() {
    let header = format!(
        r#"{{"{EMBED}":{{"dtype":"F32","shape":[{n},{n}],"data_offsets":[0,4]}}}}"#,
        n = 1u64 << 40
    );
    bad_file(&raw(header.as_bytes(), &[0; 4]), &[EMBED, "overflows"]);
}

#[test]
fn offsets_inverted() {
    let header = format!(r#"{{"{EMBED}":{{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}}}"#);
    bad_file(
        &raw(header.as_bytes(), &[0; 8]),
        &[EMBED, "data offsets [8, 0] are inverted"],
    );
}

#[test]
fn offsets_overlapping() {
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                      "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    bad_file(
        &raw(header, &[0; 12]),
        &[
            "tensor `b`",
            "data offsets [4, 12] overlap tensor `a`, which ends at 8",
        ],
    );
}

#[test]
fn offsets_with_a_gap() {
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                      "b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#;
    bad_file(
        &raw(header, &[0; 20]),
        &["tensor `b`", "leave a gap of 4 bytes after tensor `a`"],
    );
    // A gap before the first tensor.
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    bad_file(
        &raw(header, &[0; 12]),
        &["tensor `a`", "gap of 4 bytes at the start"],
    );
}

#[test]
fn offsets_past_the_end() {
    let header = format!(r#"{{"{EMBED}":{{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}}}"#);
    bad_file(
        &raw(header.as_bytes(), &[0; 8]),
        &[
            EMBED,
            "data ends at byte 16",
            "only 8 bytes of data (truncated?)",
        ],
    );
}

#[test]
fn truncated_file() {
    let mut bytes = fs::read(common::fixture("base").join(SINGLE)).unwrap();
    bytes.truncate(bytes.len() - 100);
    bad_file(&bytes, &["tensor `", "(truncated?)"]);
}

#[test]
fn trailing_bytes_after_the_last_tensor() {
    let mut bytes = fs::read(common::fixture("base").join(SINGLE)).unwrap();
    bytes.extend_from_slice(&[0; 16]);
    bad_file(
        &bytes,
        &["tensor `model.norm.weight`: 16 bytes of data follow this last tensor"],
    );
}

#[test]
fn byte_length_differs_from_shape_times_dtype() {
    let header = format!(r#"{{"{EMBED}":{{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}}}"#);
    bad_file(
        &raw(header.as_bytes(), &[0; 8]),
        &[EMBED, "holds 8 bytes but shape [3] of F32 needs 12"],
    );
}

#[test]
fn a_header_declaring_a_huge_tensor_does_not_allocate() {
    // 4 TiB declared in a file of about 120 bytes: refused by validation, whether the offsets
    // claim the full size or not.
    let n = 1u64 << 20;
    for end in [4 * n * n, 4] {
        let header = format!(
            r#"{{"{EMBED}":{{"dtype":"F32","shape":[{n},{n}],"data_offsets":[0,{end}]}}}}"#
        );
        let bytes = raw(header.as_bytes(), &[0; 16]);
        assert!(bytes.len() < 160);
        bad_file(&bytes, &[EMBED]);
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_LIMIT,
        "an allocation of {largest} bytes was made"
    );
}

#[test]
fn a_valid_file_declaring_a_huge_tensor_is_refused_before_loading_it() {
    // The base checkpoint with its embedding replaced by a 64 GiB one in a sparse file: the
    // header is valid, so only the shape check against config.json stands between it and an
    // allocation of 64 GiB.
    let tmp = copy_fixture("base");
    let path = tmp.path().join(SINGLE);
    edit_tensors(&path, |t| {
        t.remove(EMBED);
    });
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let side = 1u64 << 17;
    let huge = 4 * side * side;
    header[EMBED] = json!({
        "dtype": "F32",
        "shape": [side, side],
        "data_offsets": [data.len() as u64, data.len() as u64 + huge],
    });
    let out = raw(serde_json::to_string(&header).unwrap().as_bytes(), data);
    let total = out.len() as u64 + huge;
    fs::write(&path, &out).unwrap();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    if let Err(e) = file.set_len(total) {
        eprintln!("skipped: this file system cannot hold a sparse file of {total} bytes: {e}");
        return;
    }
    drop(file);
    refused(
        tmp.path(),
        &[
            EMBED,
            "shape [131072, 131072]",
            SINGLE,
            "does not match the config's [512, 64]",
        ],
    );
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_LIMIT,
        "an allocation of {largest} bytes was made"
    );
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

#[test]
fn index_entry_with_dotdot() {
    let (tmp, dir) = nested_fixture("sharded_f16");
    // A real file waits at the other end of the `..`.
    fs::copy(dir.join(SHARD1), tmp.path().join(SHARD1)).unwrap();
    edit_weight_map(&dir, |m| {
        m.insert("lm_head.weight".into(), json!(format!("../{SHARD1}")));
    });
    refused(
        &dir,
        &[
            INDEX,
            &format!("shard `../{SHARD1}`"),
            "lm_head.weight",
            "leaves the model directory",
        ],
    );
}

#[test]
fn index_entry_with_an_absolute_path() {
    let (tmp, dir) = nested_fixture("sharded_f16");
    let outside = tmp.path().join(SHARD1);
    fs::copy(dir.join(SHARD1), &outside).unwrap();
    edit_weight_map(&dir, |m| {
        m.insert("lm_head.weight".into(), json!(outside.to_str().unwrap()));
    });
    refused(
        &dir,
        &[
            INDEX,
            outside.to_str().unwrap(),
            "leaves the model directory",
        ],
    );
}

#[test]
fn index_entry_that_is_a_symlink_leaving_the_model_directory() {
    let (tmp, dir) = nested_fixture("sharded_f16");
    let outside = tmp.path().join("elsewhere");
    fs::create_dir(&outside).unwrap();
    fs::rename(dir.join(SHARD1), outside.join(SHARD1)).unwrap();
    std::os::unix::fs::symlink(outside.join(SHARD1), dir.join(SHARD1)).unwrap();
    refused(
        &dir,
        &[
            INDEX,
            &format!("shard `{SHARD1}`"),
            "resolves outside the model directory",
        ],
    );
    // A relative symlink is no different.
    fs::remove_file(dir.join(SHARD1)).unwrap();
    std::os::unix::fs::symlink(format!("../elsewhere/{SHARD1}"), dir.join(SHARD1)).unwrap();
    refused(
        &dir,
        &[INDEX, SHARD1, "resolves outside the model directory"],
    );
}

#[test]
fn symlinked_shards_of_the_hf_cache_load() {
    // The HF cache keeps a snapshot's files as symlinks into the repository's `blobs/`; that
    // is inside the model's cache folder, so it loads. A symlink out of that folder does not.
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--acme--tiny");
    let snap = repo.join("snapshots/0123abcd");
    let blobs = repo.join("blobs");
    fs::create_dir_all(&snap).unwrap();
    copy_dir(&common::fixture("sharded_f16"), &blobs);
    for entry in fs::read_dir(&blobs).unwrap() {
        let name = entry.unwrap().file_name();
        let target = Path::new("../../blobs").join(&name);
        std::os::unix::fs::symlink(target, snap.join(&name)).unwrap();
    }
    let model = load_olmoe(&snap, &Device::Cpu, DType::F32, |_, _| {});
    assert!(model.is_ok(), "{}", model.err().unwrap());

    fs::rename(blobs.join(SHARD2), tmp.path().join(SHARD2)).unwrap();
    fs::remove_file(snap.join(SHARD2)).unwrap();
    std::os::unix::fs::symlink(tmp.path().join(SHARD2), snap.join(SHARD2)).unwrap();
    refused(
        &snap,
        &[INDEX, SHARD2, "resolves outside the model directory"],
    );
}

#[test]
fn missing_shard() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    fs::remove_file(dir.join(SHARD3)).unwrap();
    refused(&dir, &[INDEX, &format!("shard `{SHARD3}`"), "is missing"]);
}

#[test]
fn index_entry_that_is_a_directory() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    fs::create_dir(dir.join("sub")).unwrap();
    edit_weight_map(&dir, |m| {
        m.insert("lm_head.weight".into(), json!("sub"));
    });
    refused(&dir, &[INDEX, "shard `sub`", "is not a regular file"]);
}

#[test]
fn tensor_listed_in_the_index_but_missing_from_its_shard() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    let name = "model.layers.0.mlp.experts.9.up_proj.weight";
    edit_weight_map(&dir, |m| {
        m.insert(name.into(), json!(SHARD2));
    });
    refused(&dir, &[INDEX, name, SHARD2, "not found in it"]);
}

#[test]
fn tensor_listed_for_the_wrong_shard() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    edit_weight_map(&dir, |m| {
        m.insert(EMBED.into(), json!(SHARD3));
    });
    refused(&dir, &[INDEX, EMBED, SHARD3, SHARD1, "is listed for"]);
}

#[test]
fn tensor_in_a_shard_but_not_in_the_index() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    let mut shard = String::new();
    edit_weight_map(&dir, |m| {
        shard = m
            .remove("model.norm.weight")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
    });
    refused(
        &dir,
        &[
            INDEX,
            "model.norm.weight",
            &shard,
            "is not listed in the index",
        ],
    );
}

#[test]
fn tensor_in_two_shards() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    let lm_head = candle_core::safetensors::load(dir.join(SHARD1), &Device::Cpu).unwrap()
        ["lm_head.weight"]
        .clone();
    edit_tensors(&dir.join(SHARD3), |t| {
        t.insert("lm_head.weight".into(), lm_head);
    });
    refused(&dir, &["lm_head.weight", SHARD1, SHARD3, "is also in"]);
}

#[test]
fn index_not_json() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    fs::write(dir.join(INDEX), "{\"weight_map\": {").unwrap();
    refused(&dir, &[INDEX, "not a valid index"]);
    fs::write(dir.join(INDEX), "{\"metadata\": {}}").unwrap();
    refused(&dir, &[INDEX, "not a valid index", "weight_map"]);
}

#[test]
fn corrupt_shard_is_named() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    let path = dir.join(SHARD2);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    refused(&dir, &[SHARD2, "(truncated?)"]);
}

#[test]
fn wrong_shape_in_a_shard() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    let name = "model.layers.1.mlp.experts.3.down_proj.weight";
    let index: Value = serde_json::from_str(&fs::read_to_string(dir.join(INDEX)).unwrap()).unwrap();
    let shard = index["weight_map"][name].as_str().unwrap();
    edit_tensors(&dir.join(shard), |t| {
        let w = t[name].t().unwrap().contiguous().unwrap();
        t.insert(name.into(), w);
    });
    refused(
        &dir,
        &[
            name,
            shard,
            "shape [32, 64]",
            "does not match the config's [64, 32]",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Checkpoint against config.json

#[test]
fn missing_tensor() {
    let tmp = copy_fixture("base");
    let name = "model.layers.1.self_attn.q_proj.weight";
    edit_tensors(&tmp.path().join(SINGLE), |t| {
        t.remove(name).unwrap();
    });
    refused(tmp.path(), &[name, "missing from", SINGLE]);
}

#[test]
fn missing_tensor_in_a_sharded_checkpoint() {
    let (_tmp, dir) = nested_fixture("sharded_f16");
    let name = "model.layers.1.self_attn.o_proj.weight";
    let mut shard = String::new();
    edit_weight_map(&dir, |m| {
        shard = m.remove(name).unwrap().as_str().unwrap().to_string();
    });
    edit_tensors(&dir.join(&shard), |t| {
        t.remove(name).unwrap();
    });
    refused(&dir, &[name, "missing from", INDEX]);
}

#[test]
fn no_experts_at_all() {
    let tmp = copy_fixture("base");
    edit_tensors(&tmp.path().join(SINGLE), |t| {
        t.retain(|k, _| !k.contains(".experts."));
    });
    refused(
        tmp.path(),
        &["model.layers.0.mlp.experts", "no experts found", SINGLE],
    );
}

#[test]
fn wrong_shape_transposed_projection() {
    let tmp = copy_fixture("gqa_normtopk");
    let name = "model.layers.1.self_attn.k_proj.weight";
    edit_tensors(&tmp.path().join(SINGLE), |t| {
        let w = t[name].t().unwrap().contiguous().unwrap();
        t.insert(name.into(), w);
    });
    refused(
        tmp.path(),
        &[
            name,
            "shape [64, 32]",
            SINGLE,
            "does not match the config's [32, 64]",
        ],
    );
}

#[test]
fn unexpected_extra_tensor() {
    let tmp = copy_fixture("base");
    let name = "model.layers.0.self_attn.extra.weight";
    edit_tensors(&tmp.path().join(SINGLE), |t| {
        t.insert(
            name.into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    refused(tmp.path(), &[name, "unexpected tensor in", SINGLE]);
}

#[test]
fn a_layer_more_than_the_config_says() {
    let tmp = copy_fixture("base");
    edit_json(&tmp.path().join("config.json"), |c| {
        c["num_hidden_layers"] = json!(1)
    });
    refused(
        tmp.path(),
        &["model.layers.1.", "unexpected tensor in", SINGLE, "(and "],
    );
}

#[test]
fn no_weights_at_all() {
    let tmp = copy_fixture("base");
    fs::remove_file(tmp.path().join(SINGLE)).unwrap();
    refused(
        tmp.path(),
        &[
            tmp.path().to_str().unwrap(),
            &format!("no `{SINGLE}` or `{INDEX}`"),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// config.json

/// Asserts that the base fixture with `edit` applied to its config.json is refused with an
/// error naming config.json and containing `needles`.
fn bad_config(edit: impl FnOnce(&mut Value), needles: &[&str]) {
    let tmp = copy_fixture("base");
    edit_json(&tmp.path().join("config.json"), edit);
    let msg = refused(tmp.path(), needles);
    assert!(
        msg.contains("config.json"),
        "the error does not name config.json: {msg}"
    );
}

#[test]
fn config_zero_heads() {
    bad_config(
        |c| c["num_attention_heads"] = json!(0),
        &["`num_attention_heads` must be positive"],
    );
}

#[test]
fn config_zero_layers() {
    bad_config(
        |c| c["num_hidden_layers"] = json!(0),
        &["`num_hidden_layers` must be positive"],
    );
}

#[test]
fn config_zero_experts() {
    bad_config(
        |c| c["num_experts"] = json!(0),
        &["`num_experts` must be positive"],
    );
}

#[test]
fn config_zero_vocab() {
    bad_config(
        |c| c["vocab_size"] = json!(0),
        &["`vocab_size` must be positive"],
    );
}

#[test]
fn config_hidden_not_divisible_by_heads() {
    bad_config(
        |c| {
            c["num_attention_heads"] = json!(5);
            c["num_key_value_heads"] = json!(5);
        },
        &["`hidden_size` 64 is not divisible by `num_attention_heads` 5"],
    );
}

#[test]
fn config_top_k_over_experts() {
    bad_config(
        |c| c["num_experts_per_tok"] = json!(9),
        &["`num_experts_per_tok` 9 exceeds `num_experts` 8"],
    );
}

#[test]
fn config_unsupported_model_type() {
    bad_config(
        |c| c["model_type"] = json!("llama"),
        &["unsupported model_type `llama`"],
    );
    bad_config(
        |c| {
            c.as_object_mut().unwrap().remove("model_type");
        },
        &["missing field `model_type`"],
    );
}

#[test]
fn config_unsupported_hidden_act() {
    bad_config(
        |c| c["hidden_act"] = json!("gelu"),
        &["unsupported hidden_act `gelu`"],
    );
}

#[test]
fn config_unsupported_rope_scaling() {
    bad_config(
        |c| c["rope_parameters"]["rope_type"] = json!("yarn"),
        &["unsupported rope scaling type `yarn` in `rope_parameters`"],
    );
    // The older key is checked too, even next to a plain `rope_parameters`.
    bad_config(
        |c| c["rope_scaling"] = json!({"type": "yarn", "factor": 4.0}),
        &["unsupported rope scaling type `yarn` in `rope_scaling`"],
    );
    bad_config(
        |c| c["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0}),
        &["`rope_parameters` (Default) and `rope_scaling` (Linear { factor: 2.0 }) disagree"],
    );
}

#[test]
fn config_absurd_max_position_embeddings() {
    // The RoPE tables are built at load for every position: this must not be tried.
    bad_config(
        |c| c["max_position_embeddings"] = json!(1u64 << 40),
        &["`max_position_embeddings`", "beyond the supported maximum"],
    );
    bad_config(
        |c| c["max_position_embeddings"] = json!(0),
        &["`max_position_embeddings` must be positive"],
    );
}

#[test]
fn config_missing() {
    let tmp = copy_fixture("base");
    fs::remove_file(tmp.path().join("config.json")).unwrap();
    refused(tmp.path(), &["config.json", "No such file"]);
}

#[test]
fn config_not_json() {
    let tmp = copy_fixture("base");
    fs::write(
        tmp.path().join("config.json"),
        "{\"model_type\": \"olmoe\",",
    )
    .unwrap();
    refused(tmp.path(), &["config.json", "not a valid config.json"]);
}

#[test]
fn config_field_of_the_wrong_type() {
    bad_config(
        |c| c["hidden_size"] = json!("big"),
        &["invalid `hidden_size`", "invalid type: string \"big\""],
    );
}
