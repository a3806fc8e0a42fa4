//! The candle model as a [`crate::backend::Backend`]: sessions and continuous batching.

use candle_core::DType;

use super::olmoe::Olmoe;
use super::session::Session;
use crate::checkpoint::OlmoeArgs;
use crate::error::Result;

impl crate::backend::Backend for Olmoe {
    fn kind(&self) -> crate::backend::BackendKind {
        crate::backend::BackendKind::Candle
    }

    fn args(&self) -> &OlmoeArgs {
        Olmoe::args(self)
    }

    fn device(&self) -> &'static str {
        match Olmoe::device(self) {
            candle_core::Device::Cpu => "cpu",
            candle_core::Device::Cuda(_) => "cuda",
            candle_core::Device::Metal(_) => "metal",
        }
    }

    fn session(&self) -> Box<dyn crate::backend::DecodeSession + '_> {
        Box::new(CandleSession {
            model: self,
            session: Olmoe::session(self),
        })
    }

    fn slots(&self) -> Box<dyn crate::backend::SlotBatch + '_> {
        Box::new(CandleSlots {
            model: self,
            slots: Vec::new(),
        })
    }

    fn token_weight_bytes(&self) -> Option<usize> {
        Some(Olmoe::token_weight_bytes(self))
    }

    fn kv_bytes_per_token(&self) -> Option<usize> {
        let a = Olmoe::args(self);
        Some(
            2 * a.num_hidden_layers
                * a.num_key_value_heads
                * a.head_dim
                * self.dtype().size_in_bytes(),
        )
    }

    fn device_memory(&self) -> Option<crate::backend::DeviceMemory> {
        match Olmoe::device(self) {
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(dev) => {
                let (free, total) = dev.cuda_stream().context().mem_get_info().ok()?;
                Some(crate::backend::DeviceMemory {
                    free: free as u64,
                    total: total as u64,
                })
            }
            _ => None,
        }
    }

    fn logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut s = Olmoe::session(self);
        let logits = self.forward(&[ids.to_vec()], &mut s)?.squeeze(0)?;
        Ok(logits.to_dtype(DType::F32)?.to_vec2()?)
    }

    fn encode(
        &self,
        batch: &[Vec<u32>],
        pooling: crate::backend::Pooling,
    ) -> Result<Vec<Vec<f32>>> {
        let mut s = Olmoe::session(self);
        let hidden = self.forward_hidden(batch, &mut s)?.to_dtype(DType::F32)?;
        let mut out = Vec::with_capacity(batch.len());
        for (b, &pad) in s.padding().iter().enumerate() {
            let width = hidden.dim(1)?;
            let rows = hidden.get(b)?.narrow(0, pad, width - pad)?;
            let pooled = match pooling {
                crate::backend::Pooling::Mean => rows.mean(0)?,
                crate::backend::Pooling::Last => rows.get(width - pad - 1)?,
            };
            out.push(pooled.to_vec1()?);
        }
        Ok(out)
    }
}

/// Continuous batching on candle: each slot a single-sequence [`Session`]; a step runs all
/// listed slots through one forward pass ([`Olmoe::forward_each`]), and so does the prefill of
/// several joining prompts ([`crate::backend::SlotBatch::insert_many`]).
struct CandleSlots<'a> {
    model: &'a Olmoe,
    slots: Vec<Option<Session>>,
}

impl CandleSlots<'_> {
    /// Fresh sessions for `prompts`, prefilled in one pass; their last logits.
    fn prefill(&self, prompts: &[&[u32]]) -> Result<Vec<(Session, Vec<f32>)>> {
        let mut sessions: Vec<Session> = prompts.iter().map(|_| self.model.session()).collect();
        let mut steps: Vec<(&mut Session, &[u32])> =
            sessions.iter_mut().zip(prompts.iter().copied()).collect();
        let logits: Vec<Vec<f32>> = self
            .model
            .forward_each(&mut steps)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        Ok(sessions.into_iter().zip(logits).collect())
    }
}

impl crate::backend::SlotBatch for CandleSlots<'_> {
    fn insert(&mut self, prompt: &[u32]) -> Result<(crate::backend::Slot, Vec<f32>)> {
        let (session, logits) = self.prefill(&[prompt])?.pop().ok_or_else(|| {
            crate::error::Error::internal("logits", "the backend returned no rows")
        })?;
        Ok((crate::backend::take_slot(&mut self.slots, session), logits))
    }

    fn insert_many(&mut self, prompts: &[&[u32]]) -> Vec<Result<(crate::backend::Slot, Vec<f32>)>> {
        if prompts.len() < 2 {
            return prompts.iter().map(|p| self.insert(p)).collect();
        }
        match self.prefill(prompts) {
            Ok(done) => done
                .into_iter()
                .map(|(session, logits)| {
                    Ok((crate::backend::take_slot(&mut self.slots, session), logits))
                })
                .collect(),
            // One bad prompt fails the pass: each one alone, so the error is its own.
            Err(_) => prompts.iter().map(|p| self.insert(p)).collect(),
        }
    }

    fn step(&mut self, steps: &[(crate::backend::Slot, u32)]) -> Result<Vec<Vec<f32>>> {
        crate::backend::check_step(&self.slots, steps)?;
        if steps.is_empty() {
            return Ok(vec![]);
        }
        // Slots in ascending order, so that each session can be borrowed mutably once.
        let mut order: Vec<usize> = (0..steps.len()).collect();
        order.sort_by_key(|&i| steps[i].0);
        let mut sessions: Vec<(&mut Session, &[u32])> = Vec::with_capacity(steps.len());
        let mut rest: &mut [Option<Session>] = &mut self.slots;
        let mut base = 0;
        for &i in &order {
            let (slot, token) = &steps[i];
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(slot - base);
            let (first, tail) = tail.split_first_mut().ok_or_else(|| {
                crate::error::Error::invalid("slot", format!("{slot} is out of range"))
            })?;
            let session = first.as_mut().ok_or_else(|| {
                crate::error::Error::invalid("slot", format!("{slot} holds no sequence"))
            })?;
            sessions.push((session, std::slice::from_ref(token)));
            rest = tail;
            base = slot + 1;
        }
        let logits: Vec<Vec<f32>> = self
            .model
            .forward_each(&mut sessions)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        // Back to the caller's order.
        let mut out = vec![Vec::new(); steps.len()];
        for (row, &i) in logits.into_iter().zip(&order) {
            out[i] = row;
        }
        Ok(out)
    }

    fn remove(&mut self, slot: crate::backend::Slot) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = None;
        }
    }

    fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// A candle decoding session: the model and its KV cache.
struct CandleSession<'a> {
    model: &'a Olmoe,
    session: Session,
}

impl crate::backend::DecodeSession for CandleSession<'_> {
    fn step(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let logits = self.model.forward_last(tokens, &mut self.session)?;
        Ok(logits.to_dtype(DType::F32)?.to_vec2()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::candle::load_olmoe;
    use crate::backend::Backend;
    use candle_core::Device;

    fn fixture(name: &str) -> Olmoe {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models")
            .join(name);
        load_olmoe(&dir, &Device::Cpu, DType::F32, |_, _| ()).unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Prompts of different lengths prefilled in one pass, beside a running sequence, then
    /// decoded together: every row equals the same sequence run alone.
    #[test]
    fn prompts_prefilled_together_equal_each_alone() {
        for name in ["base", "gqa_normtopk", "clip_bias"] {
            let model = fixture(name);
            let prompts: [&[u32]; 4] = [
                &[17, 301, 88, 452, 5, 230, 511],
                &[42, 399],
                &[3],
                &[7, 8, 9, 10, 11],
            ];
            let tokens: [u32; 2] = [100, 200];
            let alone: Vec<Vec<Vec<f32>>> = prompts
                .iter()
                .map(|p| {
                    let mut s = Backend::session(&model);
                    let mut rows = vec![s.step(&[p.to_vec()]).unwrap().remove(0)];
                    for &t in &tokens {
                        rows.push(s.step(&[vec![t]]).unwrap().remove(0));
                    }
                    rows
                })
                .collect();
            let mut batch = Backend::slots(&model);
            let (first, row) = batch.insert(prompts[0]).unwrap();
            assert!(max_diff(&row, &alone[0][0]) <= 1e-4);
            let step = batch.step(&[(first, tokens[0])]).unwrap();
            assert!(max_diff(&step[0], &alone[0][1]) <= 1e-4);
            let joined = batch.insert_many(&prompts[1..]);
            let mut slots = vec![first];
            for (i, r) in joined.into_iter().enumerate() {
                let (slot, row) = r.unwrap();
                let d = max_diff(&row, &alone[i + 1][0]);
                assert!(
                    d <= 1e-4,
                    "{name}: prompt {} prefilled together: {d}",
                    i + 1
                );
                slots.push(slot);
            }
            // The first sequence is one token ahead of the others.
            let mut steps: Vec<(usize, u32)> = vec![(slots[0], tokens[1])];
            steps.extend(slots[1..].iter().map(|&s| (s, tokens[0])));
            let rows = batch.step(&steps).unwrap();
            let d = max_diff(&rows[0], &alone[0][2]);
            assert!(d <= 1e-4, "{name}: sequence 0: {d}");
            for i in 1..prompts.len() {
                let d = max_diff(&rows[i], &alone[i][1]);
                assert!(
                    d <= 1e-4,
                    "{name}: sequence {i} after joining together: {d}"
                );
            }
        }
    }

    /// A bad prompt among several fails alone; the others start.
    #[test]
    fn a_bad_prompt_fails_only_itself() {
        let model = fixture("base");
        let mut batch = Backend::slots(&model);
        let joined = batch.insert_many(&[&[1, 2, 3], &[5, 1_000_000], &[], &[4]]);
        assert!(joined[0].is_ok() && joined[3].is_ok());
        assert!(joined[1].is_err() && joined[2].is_err());
        assert_eq!(batch.len(), 2);
    }
}
