//! [`AdamW`] with its state in the open, so that a checkpoint can store it and a resumed run
//! continues bit for bit. The update is candle's `AdamW` (and torch's) step for step:
//!
//! ```text
//! m ← β1·m + (1−β1)·g          v ← β2·v + (1−β2)·g²
//! m̂ = m / (1−β1^t)             v̂ = v / (1−β2^t)
//! θ ← θ·(1 − lr·λ) − lr · m̂ / (√v̂ + ε)
//! ```

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

/// AdamW hyper-parameters (torch's defaults but for the weight decay, 0 here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// β1. Default 0.9.
    pub beta1: f64,
    /// β2. Default 0.999.
    pub beta2: f64,
    /// ε. Default 1e-8.
    pub eps: f64,
    /// Decoupled weight decay λ. Default 0.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over named variables; the moments are plain tensors, readable and settable.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: u64,
    /// The hyper-parameters; `lr` may change between steps (warm-up).
    pub params: AdamWParams,
}

impl AdamW {
    /// An optimiser over `vars` with zero moments.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let m = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            vars,
            m,
            v,
            t: 0,
            params,
        })
    }

    /// Steps taken.
    pub fn t(&self) -> u64 {
        self.t
    }

    /// The variables, by name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// `(name, first moment, second moment)` of every variable, in order.
    pub fn moments(&self) -> impl Iterator<Item = (&str, &Tensor, &Tensor)> {
        self.vars
            .iter()
            .zip(self.m.iter().zip(&self.v))
            .map(|((n, _), (m, v))| (n.as_str(), m, v))
    }

    /// Restores the state of a checkpoint: the step count and each variable's moments,
    /// which must have the variable's shape.
    pub fn restore(
        &mut self,
        t: u64,
        mut moments: impl FnMut(&str) -> Result<(Tensor, Tensor)>,
    ) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let (m, v) = moments(name)?;
            for (what, x) in [("first", &m), ("second", &v)] {
                if x.dims() != var.dims() {
                    return Err(Error::tensor(
                        name.clone(),
                        format!(
                            "{what} moment has shape {:?}, the parameter {:?}",
                            x.dims(),
                            var.dims()
                        ),
                    ));
                }
            }
            self.m[i] = m;
            self.v[i] = v;
        }
        self.t = t;
        Ok(())
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let p = self.params;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let scale_m = 1.0 / (1.0 - p.beta1.powi(t));
        let scale_v = 1.0 / (1.0 - p.beta2.powi(t));
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let m = ((&self.m[i] * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&m * scale_m)?;
            let v_hat = (&v * scale_v)?;
            let decayed = (var.as_tensor() * (1.0 - p.lr * p.weight_decay))?;
            let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            var.set(&(decayed - (update * p.lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Optimizer;

    /// The same trajectory as candle's own AdamW, bit for bit.
    #[test]
    fn matches_candle_adamw() {
        let init = [0.5f32, -1.0, 2.0];
        let a = Var::from_slice(&init, 3, &Device::Cpu).unwrap();
        let b = Var::from_slice(&init, 3, &Device::Cpu).unwrap();
        let params = AdamWParams {
            lr: 0.05,
            weight_decay: 0.01,
            ..AdamWParams::default()
        };
        let mut ours = AdamW::new(vec![("w".into(), a.clone())], params).unwrap();
        let mut theirs = candle_nn::AdamW::new(
            vec![b.clone()],
            candle_nn::ParamsAdamW {
                lr: 0.05,
                weight_decay: 0.01,
                ..candle_nn::ParamsAdamW::default()
            },
        )
        .unwrap();
        for _ in 0..5 {
            let ga = (a.as_tensor().sqr().unwrap().sum_all().unwrap())
                .backward()
                .unwrap();
            let gb = (b.as_tensor().sqr().unwrap().sum_all().unwrap())
                .backward()
                .unwrap();
            ours.step(&ga).unwrap();
            theirs.step(&gb).unwrap();
        }
        let bits = |v: &Var| -> Vec<u32> {
            v.as_tensor()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(ours.t(), 5);
    }
}
