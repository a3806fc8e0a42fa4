//! Several sequences in one MLX forward pass ([`Olmoe::forward`] over their new tokens laid end
//! to end): their last logits, their pooled hidden states, and the slot batch that the server's
//! continuous batching drives. Each sequence keeps its own KV cache; the weights are read once
//! for all of them.

use std::sync::{Mutex, MutexGuard};

use super::ffi::Array;
use super::model::{Cache, Olmoe};
use crate::backend::{check_step, take_slot, Pooling, Slot, SlotBatch};
use crate::error::{Error, Result};

/// Takes the model's lock, which serialises every MLX call. A panic elsewhere while holding it
/// leaves no MLX state half-changed that a later call could trip on: every call builds its own
/// graph.
pub(super) fn serialised(lock: &Mutex<()>) -> MutexGuard<'_, ()> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

/// `flat` cut into rows of `width`.
pub(super) fn rows(flat: Vec<f32>, width: usize) -> Vec<Vec<f32>> {
    flat.chunks(width.max(1)).map(<[f32]>::to_vec).collect()
}

/// The row of each sequence's last token among rows laid end to end, `lens` rows each.
fn last_rows(lens: impl Iterator<Item = usize>) -> Vec<u32> {
    let mut end = 0;
    lens.map(|l| {
        end += l;
        end.saturating_sub(1) as u32
    })
    .collect()
}

impl Olmoe {
    /// Float32 logits [S][vocab] of the last new token of each of the S sequences in `seqs`,
    /// after one forward pass over all their new tokens; as each sequence run alone gives them.
    pub(super) fn last_logits(&self, seqs: &mut [(&[u32], &mut Cache)]) -> Result<Vec<Vec<f32>>> {
        let h = self.forward(seqs)?;
        let last = last_rows(seqs.iter().map(|(ids, _)| ids.len()));
        let h = if h.shape().get(1) == Some(&last.len()) {
            h
        } else {
            h.take(&Array::from_slice(&last, &[last.len()])?, 1)?
        };
        let logits = self.head(&self.final_norm(&h)?)?.to_f32()?;
        Ok(rows(logits, self.args.vocab_size))
    }

    /// Final-norm hidden states pooled per sequence [B][hidden], the batch in one forward pass
    /// (attention per sequence, so memory grows with the tokens and each text's own length).
    pub(super) fn encode(&self, batch: &[Vec<u32>], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.args.hidden_size;
        let mut caches: Vec<Cache> = batch
            .iter()
            .map(|_| Cache::new(self.layers.len()))
            .collect();
        let mut seqs: Vec<(&[u32], &mut Cache)> = batch
            .iter()
            .map(Vec::as_slice)
            .zip(caches.iter_mut())
            .collect();
        let h = self.forward(&mut seqs)?;
        let lens = batch.iter().map(Vec::len);
        Ok(match pooling {
            Pooling::Last => {
                let last = last_rows(lens);
                let h = h.take(&Array::from_slice(&last, &[last.len()])?, 1)?;
                rows(self.final_norm(&h)?.to_f32()?, d)
            }
            Pooling::Mean => {
                let hidden = rows(self.final_norm(&h)?.to_f32()?, d);
                let mut start = 0;
                lens.map(|l| {
                    let part = &hidden[start..start + l];
                    start += l;
                    let n = l as f32;
                    (0..d)
                        .map(|j| part.iter().map(|r| r[j]).sum::<f32>() / n)
                        .collect()
                })
                .collect()
            }
        })
    }
}

/// Continuous batching on MLX: each slot one sequence's [`Cache`]; a step runs every listed
/// slot's token through one forward pass, and so does the prefill of several joining prompts.
pub(super) struct MlxSlots<'a> {
    model: &'a Olmoe,
    lock: &'a Mutex<()>,
    slots: Vec<Option<Cache>>,
}

impl<'a> MlxSlots<'a> {
    /// An empty batch over `model`, whose MLX calls `lock` serialises.
    pub(super) fn new(model: &'a Olmoe, lock: &'a Mutex<()>) -> Self {
        MlxSlots {
            model,
            lock,
            slots: Vec::new(),
        }
    }

    /// Fresh caches for `prompts`, prefilled in one pass; their last logits.
    fn prefill(&self, prompts: &[&[u32]]) -> Result<Vec<(Cache, Vec<f32>)>> {
        let mut caches: Vec<Cache> = prompts
            .iter()
            .map(|_| Cache::new(self.model.layers.len()))
            .collect();
        let mut seqs: Vec<(&[u32], &mut Cache)> =
            prompts.iter().copied().zip(caches.iter_mut()).collect();
        let logits = {
            let _guard = serialised(self.lock);
            self.model.last_logits(&mut seqs)?
        };
        Ok(caches.into_iter().zip(logits).collect())
    }
}

impl SlotBatch for MlxSlots<'_> {
    fn insert(&mut self, prompt: &[u32]) -> Result<(Slot, Vec<f32>)> {
        let (cache, logits) = self
            .prefill(&[prompt])?
            .pop()
            .ok_or_else(|| Error::internal("logits", "the backend returned no rows"))?;
        Ok((take_slot(&mut self.slots, cache), logits))
    }

    fn insert_many(&mut self, prompts: &[&[u32]]) -> Vec<Result<(Slot, Vec<f32>)>> {
        if prompts.len() < 2 {
            return prompts.iter().map(|p| self.insert(p)).collect();
        }
        match self.prefill(prompts) {
            Ok(done) => done
                .into_iter()
                .map(|(cache, logits)| Ok((take_slot(&mut self.slots, cache), logits)))
                .collect(),
            // One bad prompt fails the pass: each one alone, so the error is its own.
            Err(_) => prompts.iter().map(|p| self.insert(p)).collect(),
        }
    }

    fn step(&mut self, steps: &[(Slot, u32)]) -> Result<Vec<Vec<f32>>> {
        check_step(&self.slots, steps)?;
        if steps.is_empty() {
            return Ok(vec![]);
        }
        let mut held: Vec<Option<&mut Cache>> = self.slots.iter_mut().map(Option::as_mut).collect();
        let mut seqs: Vec<(&[u32], &mut Cache)> = Vec::with_capacity(steps.len());
        for (slot, token) in steps {
            let cache = held
                .get_mut(*slot)
                .and_then(Option::take)
                .ok_or_else(|| Error::invalid("slot", format!("{slot} holds no sequence")))?;
            seqs.push((std::slice::from_ref(token), cache));
        }
        let _guard = serialised(self.lock);
        self.model.last_logits(&mut seqs)
    }

    fn remove(&mut self, slot: Slot) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = None;
        }
    }

    fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}
