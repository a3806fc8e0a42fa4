//! The contract every backend meets over plain data: token ids in; logits, hidden states or
//! tokens out. No tensor type crosses it.

use crate::checkpoint::OlmoeArgs;
use crate::error::Result;
use crate::options::{BackendKind, Pooling};

/// A loaded model, whatever engine runs it.
pub trait Backend: Send + Sync {
    /// The engine.
    fn kind(&self) -> BackendKind;
    /// The model's arguments.
    fn args(&self) -> &OlmoeArgs;
    /// Where the model computes, as reports name it: `cpu`, `cuda` or `metal` (candle), `cpu`
    /// or `gpu` (MLX's GPU: Metal on Apple silicon).
    fn device(&self) -> &'static str;
    /// A fresh decoding session with an empty KV cache.
    fn session(&self) -> Box<dyn DecodeSession + '_>;
    /// Float32 logits [n][vocab] of every position of one sequence.
    fn logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>>;
    /// Final-norm hidden states pooled per sequence: [batch][hidden].
    fn encode(&self, batch: &[Vec<u32>], pooling: Pooling) -> Result<Vec<Vec<f32>>>;
    /// Weight bytes one token's decode step reads, counted from the weights as the backend
    /// holds them (for bandwidth reports); `None` when the backend cannot say.
    fn token_weight_bytes(&self) -> Option<usize> {
        None
    }
    /// Bytes one cached token takes in a sequence's KV cache (keys and values of every
    /// layer, in the dtype the cache holds); `None` when the backend cannot say.
    fn kv_bytes_per_token(&self) -> Option<usize> {
        None
    }
    /// The free and total memory of the accelerator the model runs on, as its driver reports
    /// them now; `None` on the CPU, and where the backend cannot ask.
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }
    /// An empty slot batch for continuous batching. The default keeps one [`DecodeSession`]
    /// per slot and steps them one after another; a backend that can run the slots' tokens
    /// through one forward pass overrides it.
    fn slots(&self) -> Box<dyn SlotBatch + '_> {
        Box::new(SessionSlots {
            new_session: Box::new(move || self.session()),
            sessions: Vec::new(),
        })
    }
}

/// An accelerator's memory in bytes, as its driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Not allocated by any process.
    pub free: u64,
    /// The device's whole memory.
    pub total: u64,
}

/// The state of a batch of sequences being decoded.
pub trait DecodeSession {
    /// Appends `tokens` (one list per sequence; lengths may differ on the first step only)
    /// and returns each sequence's last float32 logits [batch][vocab].
    fn step(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
}

/// A slot in a [`SlotBatch`]: one sequence with its own KV cache.
pub type Slot = usize;

/// Sequences decoded together although they joined at different times (continuous batching):
/// each lives in a slot with its own cache; a step advances any subset of them by one token.
pub trait SlotBatch {
    /// Starts a sequence from its prompt and returns its slot and its last float32 logits.
    fn insert(&mut self, prompt: &[u32]) -> Result<(Slot, Vec<f32>)>;
    /// Starts several sequences at once: each prompt's slot and last float32 logits, or why
    /// that prompt could not start, in the order given. The default inserts them one by one;
    /// a backend that can prefill them in one forward pass overrides it.
    fn insert_many(&mut self, prompts: &[&[u32]]) -> Vec<Result<(Slot, Vec<f32>)>> {
        prompts.iter().map(|p| self.insert(p)).collect()
    }
    /// Appends one token to each listed slot (each slot at most once) and returns each one's
    /// float32 logits [steps][vocab], in the order given.
    fn step(&mut self, steps: &[(Slot, u32)]) -> Result<Vec<Vec<f32>>>;
    /// Ends a sequence and frees its cache; an unknown slot is ignored.
    fn remove(&mut self, slot: Slot);
    /// Sequences held.
    fn len(&self) -> usize;
    /// Whether no sequence is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Picks a free slot in `slots` (reusing freed ones) for `value`.
pub(crate) fn take_slot<T>(slots: &mut Vec<Option<T>>, value: T) -> Slot {
    match slots.iter().position(Option::is_none) {
        Some(i) => {
            slots[i] = Some(value);
            i
        }
        None => {
            slots.push(Some(value));
            slots.len() - 1
        }
    }
}

/// Checks that a step names each slot once and only held slots.
pub(crate) fn check_step<T>(slots: &[Option<T>], steps: &[(Slot, u32)]) -> Result<()> {
    let mut seen = vec![false; slots.len()];
    for &(slot, _) in steps {
        if !matches!(slots.get(slot), Some(Some(_))) {
            return Err(crate::error::Error::invalid(
                "slot",
                format!("{slot} holds no sequence"),
            ));
        }
        if std::mem::replace(&mut seen[slot], true) {
            return Err(crate::error::Error::invalid(
                "slot",
                format!("{slot} appears twice in one step"),
            ));
        }
    }
    Ok(())
}

/// The default [`SlotBatch`]: one [`DecodeSession`] per slot, stepped in turn.
struct SessionSlots<'a> {
    new_session: Box<dyn Fn() -> Box<dyn DecodeSession + 'a> + 'a>,
    sessions: Vec<Option<Box<dyn DecodeSession + 'a>>>,
}

impl SlotBatch for SessionSlots<'_> {
    fn insert(&mut self, prompt: &[u32]) -> Result<(Slot, Vec<f32>)> {
        let mut session = (self.new_session)();
        let logits = session
            .step(&[prompt.to_vec()])?
            .into_iter()
            .next()
            .ok_or_else(|| {
                crate::error::Error::internal("logits", "the backend returned no rows")
            })?;
        Ok((take_slot(&mut self.sessions, session), logits))
    }

    fn step(&mut self, steps: &[(Slot, u32)]) -> Result<Vec<Vec<f32>>> {
        check_step(&self.sessions, steps)?;
        let mut out = Vec::with_capacity(steps.len());
        for &(slot, token) in steps {
            if let Some(Some(session)) = self.sessions.get_mut(slot) {
                let row = session.step(&[vec![token]])?.into_iter().next();
                out.push(row.ok_or_else(|| {
                    crate::error::Error::internal("logits", "the backend returned no rows")
                })?);
            }
        }
        Ok(out)
    }

    fn remove(&mut self, slot: Slot) {
        if let Some(s) = self.sessions.get_mut(slot) {
            *s = None;
        }
    }

    fn len(&self) -> usize {
        self.sessions.iter().flatten().count()
    }
}
