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
    /// First and second moments of each variable, row-major as the variable.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: u64,
    /// The hyper-parameters; `lr` may change between steps (warm-up).
    pub params: AdamWParams,
}

impl AdamW {
    /// An optimiser over `vars` with zero moments.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let m: Vec<Vec<f32>> = vars
            .iter()
            .map(|(_, v)| vec![0f32; v.elem_count()])
            .collect();
        Ok(Self {
            v: m.clone(),
            m,
            vars,
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

    /// `(name, first moment, second moment)` of every variable, in order, as tensors of the
    /// variable's shape and device.
    pub fn moments(&self) -> Result<Vec<(&str, Tensor, Tensor)>> {
        self.vars
            .iter()
            .zip(self.m.iter().zip(&self.v))
            .map(|((n, var), (m, v))| {
                let t = |x: &Vec<f32>| Tensor::from_slice(x, var.dims(), var.device());
                Ok((n.as_str(), t(m)?, t(v)?))
            })
            .collect()
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
            self.m[i] = m.flatten_all()?.to_vec1::<f32>()?;
            self.v[i] = v.flatten_all()?.to_vec1::<f32>()?;
        }
        self.t = t;
        Ok(())
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let grads = self
            .vars
            .iter()
            .map(|(_, var)| match grads.get(var.as_tensor()) {
                Some(g) => Ok(Some(g.flatten_all()?.to_vec1::<f32>()?)),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        self.step_flat(&grads)
    }

    /// One update from row-major gradients, one per variable in [`Self::vars`] order (`None`:
    /// left alone). The arithmetic is that of [`Self::step`] on tensors (candle's op by op,
    /// scalars rounded to f32 as candle's `affine` does), fused into one pass per variable.
    pub fn step_flat(&mut self, grads: &[Option<Vec<f32>>]) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(Error::invalid(
                "gradients",
                format!("{} given for {} variables", grads.len(), self.vars.len()),
            ));
        }
        self.t += 1;
        let p = self.params;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let f = |x: f64| x as f32;
        let (b1, one_b1) = (f(p.beta1), f(1.0 - p.beta1));
        let (b2, one_b2) = (f(p.beta2), f(1.0 - p.beta2));
        let scale_m = f(1.0 / (1.0 - p.beta1.powi(t)));
        let scale_v = f(1.0 / (1.0 - p.beta2.powi(t)));
        let (decay, lr, eps) = (f(1.0 - p.lr * p.weight_decay), f(p.lr), f(p.eps));
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else {
                continue;
            };
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            if g.len() != m.len() {
                return Err(Error::tensor(
                    name.clone(),
                    format!("gradient of {} values, expected {}", g.len(), m.len()),
                ));
            }
            let mut theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let c = Coefficients {
                b1,
                one_b1,
                b2,
                one_b2,
                scale_m,
                scale_v,
                decay,
                lr,
                eps,
            };
            update(&mut theta, m, v, g, &c);
            var.set(&Tensor::from_vec(theta, var.dims(), var.device())?)?;
        }
        Ok(())
    }
}

/// The scalars of one AdamW step, rounded to f32 as candle's `affine` rounds them.
struct Coefficients {
    b1: f32,
    one_b1: f32,
    b2: f32,
    one_b2: f32,
    scale_m: f32,
    scale_v: f32,
    decay: f32,
    lr: f32,
    eps: f32,
}

/// One AdamW update of a variable, element by element, in candle's op order: `x · s + 0` for
/// each scalar product (candle's `affine`), `√v̂ · 1 + ε`.
fn update(theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: &Coefficients) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { update_avx2(theta, m, v, g, c) };
    }
    update_portable(theta, m, v, g, c);
}

#[inline]
fn update_portable(theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: &Coefficients) {
    for (((theta, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
        *m = (*m * c.b1 + 0.0) + (g * c.one_b1 + 0.0);
        *v = (*v * c.b2 + 0.0) + ((g * g) * c.one_b2 + 0.0);
        let m_hat = *m * c.scale_m + 0.0;
        let v_hat = *v * c.scale_v + 0.0;
        let decayed = *theta * c.decay + 0.0;
        let step = m_hat / (v_hat.sqrt() * 1.0 + c.eps);
        *theta = decayed - (step * c.lr + 0.0);
    }
}

/// [`update_portable`] compiled for AVX2: the same IEEE operations, eight lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn update_avx2(
    theta: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    c: &Coefficients,
) {
    update_portable(theta, m, v, g, c);
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
