//! The head on disk: save then load, and what a damaged directory gives.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::tests::{bits, head, parameters, random_memories, random_vec, WIDTH};
use super::{MemoryActionHead, CONFIG_FILE, WEIGHTS_FILE};
use crate::error::Error;

/// Rewrites the saved weights, letting `edit` change the (name → dtype, shape, bytes) map.
fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: BTreeMap<_, _> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| (name, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<_> = map
        .iter()
        .map(|(name, (dtype, shape, data))| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> String {
    MemoryActionHead::load(dir, &Device::Cpu)
        .unwrap_err()
        .to_string()
}

#[test]
fn save_then_load_gives_bit_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(42);
    head.save(dir.path()).unwrap();
    let loaded = MemoryActionHead::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), head.config());
    assert_eq!(loaded.input_dim(), WIDTH);
    assert_eq!(parameters(&loaded), parameters(&head));
    let mut rng = StdRng::seed_from_u64(9);
    for m in [0, 1, 4] {
        let fact = random_vec(&mut rng, WIDTH);
        let memories = random_memories(&mut rng, m);
        assert_eq!(
            loaded.decide(&fact, &memories).unwrap(),
            head.decide(&fact, &memories).unwrap()
        );
        let fact = Tensor::from_vec(fact, WIDTH, &Device::Cpu).unwrap();
        let flat: Vec<f32> = memories.into_iter().flat_map(|(_, v)| v).collect();
        let memories = Tensor::from_vec(flat, (m, WIDTH), &Device::Cpu).unwrap();
        let a = head.scores(&fact, &memories).unwrap();
        let b = loaded.scores(&fact, &memories).unwrap();
        assert_eq!(bits(&a.op_logits), bits(&b.op_logits));
        assert_eq!(
            a.target_logits.as_ref().map(bits),
            b.target_logits.as_ref().map(bits)
        );
    }
}

#[test]
fn save_writes_exactly_the_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested").join("head");
    head(0).save(&out).unwrap();
    head(1).save(&out).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [WEIGHTS_FILE, CONFIG_FILE]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(json["input_dim"], WIDTH);
    assert_eq!(json["format_version"], 2);
    assert_eq!(json["config"]["seed"], 1);
}

#[test]
fn a_truncated_weights_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    head(0).save(dir.path()).unwrap();
    let path = dir.path().join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for len in [bytes.len() / 2, 7, 0] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = MemoryActionHead::load(dir.path(), &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
        assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");
    }
    std::fs::remove_file(&path).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains(WEIGHTS_FILE), "{err}");
}

#[test]
fn a_bad_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    head(0).save(dir.path()).unwrap();
    let path = dir.path().join(CONFIG_FILE);
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let edits: [fn(&mut serde_json::Value); 6] = [
        |v| v["extra"] = 1.into(),
        |v| v["config"]["temperature"] = 1.into(),
        |v| v["config"]["target_operations"] = serde_json::json!(["MERGE"]),
        |v| v["config"]["operations"] = serde_json::json!(["ADD", "ADD", "UPDATE", "DELETE"]),
        |v| v["format_version"] = 1.into(),
        |v| v["input_dim"] = 0.into(),
    ];
    for edit in edits {
        let mut v = good.clone();
        edit(&mut v);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = MemoryActionHead::load(dir.path(), &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(err.to_string().contains(CONFIG_FILE), "{err}");
    }
    std::fs::write(&path, b"{not json").unwrap();
    assert!(load_err(dir.path()).contains(CONFIG_FILE));
    // A config whose dimensions disagree with the weights is caught on the tensors.
    let mut v = good.clone();
    v["input_dim"] = 32.into();
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("proj.weight") && err.contains(WEIGHTS_FILE),
        "{err}"
    );
}

#[test]
fn bad_tensors_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let saved = || {
        head(0).save(dir.path()).unwrap();
        dir.path()
    };
    rewrite_weights(saved(), |m| {
        m.insert("op.bias".into(), (Dtype::F32, vec![5], vec![0; 20]));
    });
    let err = load_err(dir.path());
    assert!(err.contains("op.bias") && err.contains("shape"), "{err}");

    rewrite_weights(saved(), |m| {
        m.remove("target.weight");
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("target.weight") && err.contains("missing"),
        "{err}"
    );

    rewrite_weights(saved(), |m| {
        m.insert("extra.weight".into(), (Dtype::F32, vec![1], vec![0; 4]));
    });
    let err = load_err(dir.path());
    assert!(err.contains("extra.weight"), "{err}");

    rewrite_weights(saved(), |m| {
        let (_, shape, data) = m.remove("proj.bias").unwrap();
        let half = vec![0u8; data.len() / 2];
        m.insert("proj.bias".into(), (Dtype::F16, shape, half));
    });
    let err = load_err(dir.path());
    assert!(err.contains("proj.bias") && err.contains("dtype"), "{err}");

    rewrite_weights(saved(), |m| {
        let entry = m.get_mut("target.bias").unwrap();
        entry.2[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("target.bias") && err.contains("finite"),
        "{err}"
    );
    assert!(err.contains(WEIGHTS_FILE), "{err}");
}

#[test]
fn a_diverged_head_is_not_saved() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(0);
    {
        let data = head.varmap().data().lock().unwrap();
        let nan = Tensor::full(f32::NAN, 4, &Device::Cpu).unwrap();
        data["op.bias"].set(&nan).unwrap();
    }
    let err = head.save(dir.path()).unwrap_err();
    assert!(err.to_string().contains("op.bias"), "{err}");
    assert!(!dir.path().join(CONFIG_FILE).exists());
    let err = head.decide(&[0.0; WIDTH], &[]).unwrap_err();
    assert!(matches!(err, Error::Tensor { .. }), "{err}");
}
