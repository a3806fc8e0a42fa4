//! Where a model lives: a local directory, or a hub id resolved through the standard HF cache
//! (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`). With
//! `HF_HUB_OFFLINE=1` only the cache is consulted; otherwise missing files are downloaded.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

use super::files::{shard_names, INDEX_FILE, SINGLE_FILE};
use crate::error::{Error, Result};

/// Files a model directory needs besides its weights.
const REQUIRED: &[&str] = &["config.json"];
/// Files used when present.
const OPTIONAL: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// Returns a local directory holding `model`: the path itself if it exists, else the
/// snapshot directory of the hub id in the HF cache (downloading unless offline).
pub fn resolve(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.exists() {
        if !path.is_dir() {
            return Err(Error::Resolve {
                model: model.into(),
                msg: "is not a directory".into(),
            });
        }
        return Ok(path.to_path_buf());
    }
    if !looks_like_hub_id(model) {
        return Err(Error::Resolve {
            model: model.into(),
            msg: "no such directory, and not a hub id of the form `owner/name`".into(),
        });
    }
    let (repo_id, revision) = match model.split_once('@') {
        Some((id, rev)) => (id.to_string(), rev.to_string()),
        None => (model.to_string(), "main".to_string()),
    };
    let repo = Repo::with_revision(repo_id, hf_hub::RepoType::Model, revision);
    if offline() {
        from_cache(model, &repo, &cache())
    } else {
        download(model, repo)
    }
}

fn looks_like_hub_id(model: &str) -> bool {
    let id = model.split('@').next().unwrap_or("");
    let mut parts = id.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty())
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
}

fn cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => Cache::new(dir.into()),
        None => Cache::from_env(),
    }
}

fn from_cache(model: &str, repo: &Repo, cache: &Cache) -> Result<PathBuf> {
    let cached = cache.repo(repo.clone());
    let missing = |file: &str| Error::Resolve {
        model: model.into(),
        msg: format!(
            "`{file}` is not in the HF cache at {} and HF_HUB_OFFLINE is set",
            cache.path().display()
        ),
    };
    let config = cached
        .get("config.json")
        .ok_or_else(|| missing("config.json"))?;
    let weights = if let Some(index) = cached.get(INDEX_FILE) {
        for shard in shard_names(&index)? {
            cached.get(&shard).ok_or_else(|| missing(&shard))?;
        }
        index
    } else {
        cached
            .get(SINGLE_FILE)
            .ok_or_else(|| missing(SINGLE_FILE))?
    };
    let _ = weights;
    config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| missing("config.json"))
}

fn download(model: &str, repo: Repo) -> Result<PathBuf> {
    let fail = |what: &str, e: hf_hub::api::sync::ApiError| {
        Error::Resolve {
        model: model.into(),
        msg: format!("could not fetch `{what}` from the hub: {e} (set HF_HUB_OFFLINE=1 to use the cache only)"),
    }
    };
    let api = ApiBuilder::from_cache(cache())
        .with_progress(true)
        .build()
        .map_err(|e| fail("the API client", e))?;
    let api = api.repo(repo);
    let mut snapshot = None;
    for file in REQUIRED {
        let p = api.get(file).map_err(|e| fail(file, e))?;
        snapshot = p.parent().map(Path::to_path_buf);
    }
    for file in OPTIONAL {
        if let Err(e) = api.get(file) {
            tracing::debug!(file, error = %e, "optional file not fetched");
        }
    }
    match api.get(INDEX_FILE) {
        Ok(index) => {
            for shard in shard_names(&index)? {
                api.get(&shard).map_err(|e| fail(&shard, e))?;
            }
        }
        Err(_) => {
            api.get(SINGLE_FILE).map_err(|e| fail(SINGLE_FILE, e))?;
        }
    }
    snapshot.ok_or_else(|| Error::Resolve {
        model: model.into(),
        msg: "empty snapshot path".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths() {
        assert!(looks_like_hub_id("allenai/OLMoE-1B-7B-0924-Instruct"));
        assert!(looks_like_hub_id("allenai/OLMoE-1B-7B-0924@main"));
        assert!(!looks_like_hub_id("just-a-name"));
        assert!(!looks_like_hub_id("a/b/c"));
        let err = resolve("definitely/not-here-and-offline").map(|_| ());
        // Either offline (cache miss) or online (fetch failure): both are Resolve errors naming the model.
        if let Err(e) = err {
            assert!(
                e.to_string().contains("definitely/not-here-and-offline"),
                "{e}"
            );
        }
        let err = resolve("no-such-dir").unwrap_err().to_string();
        assert!(
            err.contains("no-such-dir") && err.contains("owner/name"),
            "{err}"
        );
    }

    #[test]
    fn offline_cache_lookup_finds_a_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("models--acme--tiny/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(tmp.path().join("models--acme--tiny/refs")).unwrap();
        std::fs::write(tmp.path().join("models--acme--tiny/refs/main"), "abc123").unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        let repo = Repo::model("acme/tiny".into());
        let cache = Cache::new(tmp.path().to_path_buf());
        // No weights yet: a clear miss.
        let err = from_cache("acme/tiny", &repo, &cache)
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        std::fs::write(snap.join("model.safetensors"), b"x").unwrap();
        assert_eq!(from_cache("acme/tiny", &repo, &cache).unwrap(), snap);
    }
}
