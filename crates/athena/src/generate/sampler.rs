//! Choosing the next token from one row of logits.
//!
//! The processors run in the order Hugging Face `generate` runs them: repetition penalty,
//! then temperature, top-k, top-p and min-p, then a draw from the softmax of what is left.
//! Greedy decoding (temperature 0) applies the repetition penalty and takes the argmax.

use std::cmp::Ordering;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// How to choose tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the softmax; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (and any tied with the `k`-th).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least `top_p`.
    pub top_p: Option<f32>,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: Option<f32>,
    /// Penalise every token already in the sequence: a logit below zero is multiplied by it,
    /// any other divided by it (`> 1` discourages repeats).
    pub repetition_penalty: Option<f32>,
    /// Seeds the random generator; the same seed, parameters and logits give the same tokens
    /// (with the same build: `rand`'s `StdRng` may change between its versions).
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy decoding without penalty.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: None,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks every field; an [`Error::Invalid`] names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(Error::invalid(
                "temperature",
                format!("{t} is not a finite number >= 0"),
            ));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid(
                "top_k",
                "0 would keep no token; use at least 1",
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid("top_p", format!("{p} is not in (0, 1]")));
            }
        }
        if let Some(p) = self.min_p {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::invalid("min_p", format!("{p} is not in [0, 1)")));
            }
        }
        if let Some(r) = self.repetition_penalty {
            if !r.is_finite() || r <= 0.0 {
                return Err(Error::invalid(
                    "repetition_penalty",
                    format!("{r} is not a finite number > 0"),
                ));
            }
        }
        Ok(())
    }

    /// Whether tokens are chosen by argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A token still in the running and its unnormalised probability.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    weight: f64,
}

/// Descending by `key`, ties broken by ascending id.
fn descending(a: f64, b: f64, a_id: u32, b_id: u32) -> Ordering {
    b.partial_cmp(&a)
        .unwrap_or(Ordering::Equal)
        .then(a_id.cmp(&b_id))
}

/// Chooses tokens with fixed [`SamplingParams`] and its own seeded random generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// The logits after the repetition penalty.
    scratch: Vec<f32>,
    candidates: Vec<Candidate>,
}

impl Sampler {
    /// A sampler for `params`, which are validated first.
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Sampler {
            params,
            rng,
            scratch: Vec::new(),
            candidates: Vec::new(),
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token, given the logits over the vocabulary and the tokens so far (prompt
    /// included, for the repetition penalty). NaN or `+inf` logits, logits that are all `-inf`
    /// and previous tokens outside the logits are [`Error::Invalid`].
    pub fn sample(&mut self, logits: &[f32], previous_tokens: &[u32]) -> Result<u32> {
        self.penalise(logits, previous_tokens)?;
        self.draw()
    }

    /// Like [`Sampler::sample`], drawing only from the tokens set in `allowed`: a bitset over
    /// the vocabulary (bit `i % 32` of word `i / 32` for token `i`, as
    /// [`super::Constraint::allowed`] gives it). Every other logit is `-inf` before the
    /// processors run, so top-k, top-p and min-p choose among the allowed tokens only. An
    /// `allowed` that leaves no token with a finite logit is [`Error::Invalid`].
    pub fn sample_allowed(
        &mut self,
        logits: &[f32],
        previous_tokens: &[u32],
        allowed: &[u32],
    ) -> Result<u32> {
        self.penalise(logits, previous_tokens)?;
        self.restrict(allowed)?;
        self.draw()
    }

    /// Sets the logits in `scratch` that `allowed` does not allow to `-inf`.
    fn restrict(&mut self, allowed: &[u32]) -> Result<()> {
        let mut any = false;
        for (i, chunk) in self.scratch.chunks_mut(32).enumerate() {
            let bits = allowed.get(i).copied().unwrap_or(0);
            for (b, x) in chunk.iter_mut().enumerate() {
                if bits >> b & 1 == 0 {
                    *x = f32::NEG_INFINITY;
                } else {
                    any |= *x > f32::NEG_INFINITY;
                }
            }
        }
        if !any {
            return Err(Error::invalid(
                "logits",
                "no token that the constraint allows has a finite logit",
            ));
        }
        Ok(())
    }

    /// Draws from `scratch` (the processed logits).
    fn draw(&mut self) -> Result<u32> {
        if self.params.is_greedy() {
            return Ok(argmax(&self.scratch));
        }
        self.filter();
        let total: f64 = self.candidates.iter().map(|c| c.weight).sum();
        let mut target = self.rng.random::<f64>() * total;
        for c in &self.candidates {
            target -= c.weight;
            if target < 0.0 {
                return Ok(c.id);
            }
        }
        // Rounding left a sliver past the last weight: that is the last token.
        self.candidates
            .last()
            .map(|c| c.id)
            .ok_or_else(|| Error::internal("logits", "no token left"))
    }

    /// The distribution [`Sampler::sample`] draws from: every token left after the filters with
    /// its probability, most likely first. Greedy decoding gives the argmax with probability 1.
    pub fn distribution(
        &mut self,
        logits: &[f32],
        previous_tokens: &[u32],
    ) -> Result<Vec<(u32, f32)>> {
        self.penalise(logits, previous_tokens)?;
        if self.params.is_greedy() {
            return Ok(vec![(argmax(&self.scratch), 1.0)]);
        }
        self.filter();
        let total: f64 = self.candidates.iter().map(|c| c.weight).sum();
        let mut out: Vec<(u32, f32)> = self
            .candidates
            .iter()
            .map(|c| (c.id, (c.weight / total) as f32))
            .collect();
        out.sort_by(|a, b| descending(f64::from(a.1), f64::from(b.1), a.0, b.0));
        Ok(out)
    }

    /// Checks the logits and copies them to `scratch` with the repetition penalty applied.
    fn penalise(&mut self, logits: &[f32], previous_tokens: &[u32]) -> Result<()> {
        if logits.is_empty() {
            return Err(Error::invalid("logits", "empty"));
        }
        if let Some(i) = logits
            .iter()
            .position(|x| x.is_nan() || *x == f32::INFINITY)
        {
            return Err(Error::invalid(
                "logits",
                format!("token {i} has logit {}", logits[i]),
            ));
        }
        if logits.iter().all(|x| *x == f32::NEG_INFINITY) {
            return Err(Error::invalid("logits", "every token has logit -inf"));
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(logits);
        if let Some(penalty) = self.params.repetition_penalty {
            for &id in previous_tokens {
                let i = id as usize;
                // Computed from the original logit, so a token seen twice is penalised once.
                let Some(&x) = logits.get(i) else {
                    return Err(Error::invalid(
                        "previous_tokens",
                        format!("token {id} is outside the {} logits", logits.len()),
                    ));
                };
                self.scratch[i] = if x < 0.0 { x * penalty } else { x / penalty };
            }
        }
        Ok(())
    }

    /// Fills `candidates` from `scratch` with temperature, top-k, top-p and min-p applied.
    fn filter(&mut self) {
        let p = &self.params;
        self.candidates.clear();
        let max = self
            .scratch
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let ids = 0u32..;
        for (id, &logit) in ids.zip(self.scratch.iter()) {
            if logit > f32::NEG_INFINITY {
                self.candidates.push(Candidate {
                    id,
                    logit,
                    weight: 0.0,
                });
            }
        }

        // Top-k: the k-th largest logit is the threshold; ties with it stay, as in HF.
        if let Some(k) = p.top_k {
            if k < self.candidates.len() {
                let (_, kth, _) = self.candidates.select_nth_unstable_by(k - 1, |a, b| {
                    descending(f64::from(a.logit), f64::from(b.logit), a.id, b.id)
                });
                let threshold = kth.logit;
                self.candidates.retain(|c| c.logit >= threshold);
            }
        }

        // Temperature: softmax(l / t) is proportional to exp((l - max) / t), which never overflows.
        let t = f64::from(p.temperature);
        for c in &mut self.candidates {
            c.weight = ((f64::from(c.logit) - f64::from(max)) / t).exp();
        }

        // Top-p: a token stays while the mass of the tokens more likely than it is below top_p.
        if let Some(top_p) = p.top_p.filter(|&x| x < 1.0) {
            self.candidates
                .sort_unstable_by(|a, b| descending(a.weight, b.weight, a.id, b.id));
            let total: f64 = self.candidates.iter().map(|c| c.weight).sum();
            let budget = f64::from(top_p) * total;
            let mut before = 0.0;
            let mut keep = 0;
            for c in &self.candidates {
                if keep > 0 && before >= budget {
                    break;
                }
                before += c.weight;
                keep += 1;
            }
            self.candidates.truncate(keep);
        }

        // Min-p: relative to the most likely token left, which therefore always stays.
        if let Some(min_p) = p.min_p.filter(|&x| x > 0.0) {
            let top = self.candidates.iter().map(|c| c.weight).fold(0.0, f64::max);
            let threshold = f64::from(min_p) * top;
            self.candidates.retain(|c| c.weight >= threshold);
        }
    }
}

/// The index of the largest value, the first one on ties (0 for an empty slice); greedy
/// decoding's choice. NaNs are never chosen over an earlier value.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in values.iter().enumerate() {
        if x > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(params: SamplingParams) -> Result<Sampler> {
        Sampler::new(params)
    }

    fn sampling(seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            seed,
            ..Default::default()
        }
    }

    /// Logits whose softmax is `probs`.
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    fn ids(dist: &[(u32, f32)]) -> Vec<u32> {
        dist.iter().map(|d| d.0).collect()
    }

    fn assert_close(dist: &[(u32, f32)], expected: &[(u32, f32)]) {
        assert_eq!(ids(dist), ids(expected), "{dist:?}");
        for (got, want) in dist.iter().zip(expected) {
            assert!((got.1 - want.1).abs() < 1e-5, "{dist:?} vs {expected:?}");
        }
    }

    #[test]
    fn greedy_takes_first_max() -> Result<()> {
        let mut s = sampler(SamplingParams::default())?;
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[])?, 1);
        assert_eq!(s.sample(&[f32::NEG_INFINITY, -5.0], &[])?, 1);
        // Temperature 0 is greedy whatever the other filters say.
        let mut s = sampler(SamplingParams {
            top_k: Some(3),
            top_p: Some(0.5),
            ..Default::default()
        })?;
        assert_eq!(s.sample(&[0.0, 1.0, 2.0, 2.0], &[])?, 2);
        assert_eq!(s.distribution(&[0.0, 1.0, 2.0], &[])?, vec![(2, 1.0)]);
        Ok(())
    }

    #[test]
    fn same_seed_same_tokens() -> Result<()> {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect();
        let run = |seed| -> Result<Vec<u32>> {
            let mut s = sampler(sampling(seed))?;
            (0..50).map(|_| s.sample(&logits, &[])).collect()
        };
        assert_eq!(run(42)?, run(42)?);
        assert_ne!(run(42)?, run(43)?);
        Ok(())
    }

    #[test]
    fn repetition_penalty_by_hand() -> Result<()> {
        let params = SamplingParams {
            repetition_penalty: Some(2.0),
            ..Default::default()
        };
        let mut s = sampler(params)?;
        s.penalise(&[2.0, -2.0, 1.0, 0.0], &[0, 1, 1, 3])?;
        assert_eq!(s.scratch, vec![1.0, -4.0, 1.0, 0.0]);
        // Token 0 was ahead; halved to 1.0 it falls behind token 1.
        assert_eq!(s.sample(&[2.0, 1.5, 1.0], &[0])?, 1);
        let err = s
            .sample(&[1.0, 2.0], &[2])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("previous_tokens"), "{err}");
        // Without a penalty the previous tokens are not looked at.
        let mut s = sampler(SamplingParams::default())?;
        assert_eq!(s.sample(&[2.0, 1.5], &[7])?, 0);
        Ok(())
    }

    #[test]
    fn temperature_reshapes() -> Result<()> {
        let logits = logits_of(&[0.5, 0.3, 0.2]);
        let mut s = sampler(SamplingParams {
            temperature: 2.0,
            ..sampling(0)
        })?;
        let z: f32 = [0.5f32, 0.3, 0.2].iter().map(|p| p.sqrt()).sum();
        let expected = [
            (0, 0.5f32.sqrt() / z),
            (1, 0.3f32.sqrt() / z),
            (2, 0.2f32.sqrt() / z),
        ];
        assert_close(&s.distribution(&logits, &[])?, &expected);
        Ok(())
    }

    #[test]
    fn top_k_keeps_k_and_ties() -> Result<()> {
        let logits = logits_of(&[0.1, 0.4, 0.2, 0.3]);
        let mut s = sampler(SamplingParams {
            top_k: Some(2),
            ..sampling(0)
        })?;
        assert_close(
            &s.distribution(&logits, &[])?,
            &[(1, 4.0 / 7.0), (3, 3.0 / 7.0)],
        );
        let mut s = sampler(SamplingParams {
            top_k: Some(2),
            ..sampling(0)
        })?;
        let tied = s.distribution(&[3.0, 1.0, 2.0, 2.0], &[])?;
        assert_eq!(ids(&tied), vec![0, 2, 3]);
        let mut s = sampler(SamplingParams {
            top_k: Some(10),
            ..sampling(0)
        })?;
        assert_eq!(s.distribution(&logits, &[])?.len(), 4);
        Ok(())
    }

    #[test]
    fn top_p_keeps_smallest_covering_set() -> Result<()> {
        let logits = logits_of(&[0.1, 0.4, 0.2, 0.3]);
        let run = |top_p| -> Result<Vec<u32>> {
            let mut s = sampler(SamplingParams {
                top_p: Some(top_p),
                ..sampling(0)
            })?;
            Ok(ids(&s.distribution(&logits, &[])?))
        };
        assert_eq!(run(0.35)?, vec![1]);
        assert_eq!(run(0.45)?, vec![1, 3]);
        assert_eq!(run(0.75)?, vec![1, 3, 2]);
        assert_eq!(run(0.95)?, vec![1, 3, 2, 0]);
        assert_eq!(run(1.0)?, vec![1, 3, 2, 0]);
        // Always at least one token.
        assert_eq!(run(1e-9)?, vec![1]);
        let mut s = sampler(SamplingParams {
            top_p: Some(0.45),
            ..sampling(0)
        })?;
        assert_close(
            &s.distribution(&logits, &[])?,
            &[(1, 4.0 / 7.0), (3, 3.0 / 7.0)],
        );
        Ok(())
    }

    #[test]
    fn min_p_drops_unlikely_tokens() -> Result<()> {
        let logits = logits_of(&[0.1, 0.4, 0.2, 0.3]);
        let run = |min_p| -> Result<Vec<u32>> {
            let mut s = sampler(SamplingParams {
                min_p: Some(min_p),
                ..sampling(0)
            })?;
            Ok(ids(&s.distribution(&logits, &[])?))
        };
        // Thresholds 0.4 * min_p: 0.45 -> 0.18 keeps 0.2; 0.55 -> 0.22 drops it.
        assert_eq!(run(0.45)?, vec![1, 3, 2]);
        assert_eq!(run(0.55)?, vec![1, 3]);
        assert_eq!(run(0.99)?, vec![1]);
        assert_eq!(run(0.0)?.len(), 4);
        Ok(())
    }

    #[test]
    fn filters_compose_in_hf_order() -> Result<()> {
        // top-k 3 leaves [0.4, 0.3, 0.2] -> renormalised [4/9, 3/9, 2/9]; top-p 0.5 keeps two
        // (4/9 < 0.5); min-p 0.8 then drops 3/9 < 0.8 * 4/9.
        let logits = logits_of(&[0.1, 0.4, 0.2, 0.3]);
        let params = SamplingParams {
            top_k: Some(3),
            top_p: Some(0.5),
            ..sampling(0)
        };
        assert_eq!(
            ids(&sampler(params.clone())?.distribution(&logits, &[])?),
            vec![1, 3]
        );
        let params = SamplingParams {
            min_p: Some(0.8),
            ..params
        };
        assert_eq!(ids(&sampler(params)?.distribution(&logits, &[])?), vec![1]);
        Ok(())
    }

    #[test]
    fn neg_inf_is_never_drawn_and_nan_is_refused() -> Result<()> {
        let mut s = sampler(sampling(3))?;
        let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
        for _ in 0..100 {
            assert_eq!(s.sample(&logits, &[])?, 1);
        }
        for bad in [
            vec![0.0, f32::NAN],
            vec![f32::INFINITY],
            vec![f32::NEG_INFINITY; 3],
            vec![],
        ] {
            let err = s
                .sample(&bad, &[])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with("invalid logits"), "{err}");
        }
        Ok(())
    }

    #[test]
    fn frequencies_follow_probabilities() -> Result<()> {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let logits = logits_of(&probs);
        let mut s = sampler(sampling(1234))?;
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.sample(&logits, &[])? as usize] += 1;
        }
        for (count, p) in counts.iter().zip(probs) {
            let freq = *count as f32 / n as f32;
            // Four standard deviations at n = 40k is under 0.011 for any p.
            assert!((freq - p).abs() < 0.011, "{counts:?}");
        }
        Ok(())
    }

    #[test]
    fn large_vocab_top_k() -> Result<()> {
        let logits: Vec<f32> = (0..50_304)
            .map(|i| ((i * 2_654_435_761u64 as usize) % 9973) as f32 / 997.0)
            .collect();
        let mut s = sampler(SamplingParams {
            top_k: Some(5),
            ..sampling(9)
        })?;
        let dist = s.distribution(&logits, &[])?;
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert!(dist.len() >= 5);
        assert!(dist.iter().all(|(id, _)| logits[*id as usize] >= sorted[4]));
        let picked = s.sample(&logits, &[])?;
        assert!(logits[picked as usize] >= sorted[4]);
        Ok(())
    }

    #[test]
    fn validation_names_the_field() {
        let field = |p: SamplingParams| match p.validate() {
            Err(Error::Invalid { field, .. }) => field,
            _ => "ok",
        };
        let d = SamplingParams::default;
        assert_eq!(field(d()), "ok");
        assert_eq!(
            field(SamplingParams {
                temperature: -0.1,
                ..d()
            }),
            "temperature"
        );
        assert_eq!(
            field(SamplingParams {
                temperature: f32::NAN,
                ..d()
            }),
            "temperature"
        );
        assert_eq!(
            field(SamplingParams {
                temperature: f32::INFINITY,
                ..d()
            }),
            "temperature"
        );
        assert_eq!(
            field(SamplingParams {
                top_k: Some(0),
                ..d()
            }),
            "top_k"
        );
        assert_eq!(
            field(SamplingParams {
                top_p: Some(0.0),
                ..d()
            }),
            "top_p"
        );
        assert_eq!(
            field(SamplingParams {
                top_p: Some(1.01),
                ..d()
            }),
            "top_p"
        );
        assert_eq!(
            field(SamplingParams {
                top_p: Some(f32::NAN),
                ..d()
            }),
            "top_p"
        );
        assert_eq!(
            field(SamplingParams {
                top_p: Some(1.0),
                ..d()
            }),
            "ok"
        );
        assert_eq!(
            field(SamplingParams {
                min_p: Some(1.0),
                ..d()
            }),
            "min_p"
        );
        assert_eq!(
            field(SamplingParams {
                min_p: Some(-0.1),
                ..d()
            }),
            "min_p"
        );
        assert_eq!(
            field(SamplingParams {
                min_p: Some(0.0),
                ..d()
            }),
            "ok"
        );
        assert_eq!(
            field(SamplingParams {
                repetition_penalty: Some(0.0),
                ..d()
            }),
            "repetition_penalty"
        );
        assert_eq!(
            field(SamplingParams {
                repetition_penalty: Some(f32::INFINITY),
                ..d()
            }),
            "repetition_penalty"
        );
        assert!(Sampler::new(SamplingParams {
            top_k: Some(0),
            ..d()
        })
        .is_err());
    }
}
