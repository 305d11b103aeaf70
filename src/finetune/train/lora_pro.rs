//! LoRA-Pro as a fine-tuning optimizer: every LoRA layer's (A, B) gradients are turned into the m×n equivalent
//! gradient, Adam's direction is taken on it with full m×n moments, and the adjusted factor gradients
//! ([`crate::fit::lora_pro`], the same maths as the matrix studies) update A and B by plain SGD, as the official
//! code does. The moments cost 2·m·n floats per layer: [`LoraProOptimizer::state_bytes`] is reported with the run.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use ndarray::{Array2, Zip};

use crate::adapter::Method;
use crate::error::{AbbaError, Result};
use crate::finetune::bridge::{from_array, to_array};
use crate::finetune::model::Llama;
use crate::finetune::optim::{AdamWConfig, Optimizer};
use crate::fit::lora_pro::{adjust, equivalent_gradient};

/// One LoRA layer: the indices of its A and B among the trained vars, and its scale.
struct Pair {
    a: usize,
    b: usize,
    scale: f64,
}

pub struct LoraProOptimizer {
    vars: Vec<Var>,
    pairs: Vec<Pair>,
    config: AdamWConfig,
    /// First and second moments of each layer's equivalent gradient (m×n, f32).
    m: Vec<Array2<f32>>,
    v: Vec<Array2<f32>>,
    step: usize,
}

impl LoraProOptimizer {
    /// Pairs every LoRA layer of `model` with its variables among `vars` (by saved name); every trained variable
    /// must be a LoRA factor.
    pub fn new(model: &Llama, vars: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let index: HashMap<&str, usize> = vars
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        let mut pairs = Vec::new();
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for (path, _, lin) in model.linears() {
            let Some(w) = &lin.adapter else { continue };
            let Method::Lora(s) = &w.method else {
                return Err(not_lora(&path, w.method.name()));
            };
            let find = |suffix: &str| {
                index
                    .get(format!("{path}.{suffix}").as_str())
                    .copied()
                    .ok_or_else(|| {
                        AbbaError::InvalidArgument(format!("{path}: no trained {suffix}"))
                    })
            };
            pairs.push(Pair {
                a: find("lora_A")?,
                b: find("lora_B")?,
                scale: s.scale.value(s.r),
            });
            let shape = w.layer_shape();
            m.push(Array2::zeros(shape));
            v.push(Array2::zeros(shape));
        }
        if pairs.len() * 2 != vars.len() {
            return Err(not_lora(
                "the model",
                "a full fine-tuning or mixed set of variables",
            ));
        }
        Ok(LoraProOptimizer {
            vars: vars.iter().map(|(_, v)| v.clone()).collect(),
            pairs,
            config,
            m,
            v,
            step: 0,
        })
    }
}

fn not_lora(what: &str, method: &str) -> AbbaError {
    AbbaError::InvalidArgument(format!(
        "LoRA-Pro adjusts LoRA's gradients, but {what} trains {method}: use optimizer = \"lora-pro\" with method lora or rslora"
    ))
}

impl Optimizer for LoraProOptimizer {
    fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(AbbaError::InvalidArgument(format!(
                "LoRA-Pro step got {} gradients for {} parameters",
                grads.len(),
                self.vars.len()
            )));
        }
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (k, pair) in self.pairs.iter().enumerate() {
            let (va, vb) = (&self.vars[pair.a], &self.vars[pair.b]);
            let (a, b) = (to_array(va.as_tensor())?, to_array(vb.as_tensor())?);
            let (ga, gb) = (to_array(&grads[pair.a])?, to_array(&grads[pair.b])?);
            let gt = equivalent_gradient(&b, &a, pair.scale, &ga, &gb)?;
            let mut dir = Array2::<f64>::zeros(gt.dim());
            Zip::from(&mut dir)
                .and(&mut self.m[k])
                .and(&mut self.v[k])
                .and(&gt)
                .for_each(|d, m, v, &g| {
                    *m = (c.beta1 * *m as f64 + (1.0 - c.beta1) * g) as f32;
                    *v = (c.beta2 * *v as f64 + (1.0 - c.beta2) * g * g) as f32;
                    *d = (*m as f64 / c1) / ((*v as f64 / c2).sqrt() + c.eps);
                });
            let ga_p = b.t().dot(&dir) * pair.scale;
            let gb_p = dir.dot(&a.t()) * pair.scale;
            let (ga_star, gb_star, _) = adjust(&b, &a, pair.scale, &ga_p, &gb_p)?;
            let (dtype, device) = (va.dtype(), va.device().clone());
            // Decoupled weight decay on the factors, as AdamW applies it to the parameters it updates.
            let keep = 1.0 - lr * c.weight_decay;
            va.set(&from_array(&(a * keep - ga_star * lr), dtype, &device)?)?;
            vb.set(&from_array(&(b * keep - gb_star * lr), dtype, &device)?)?;
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let tensor = |a: &Array2<f32>| {
            Tensor::from_slice(
                a.as_standard_layout().as_slice().expect("standard layout"),
                a.dim(),
                &Device::Cpu,
            )
            .expect("a CPU tensor of the moment's shape")
        };
        let m = self
            .m
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("lorapro.m.{i}"), tensor(a)));
        let v = self
            .v
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("lorapro.v.{i}"), tensor(a)));
        m.chain(v).collect()
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        let fetch = |key: String, shape: (usize, usize)| -> Result<Array2<f32>> {
            let t = tensors.get(&key).ok_or_else(|| {
                AbbaError::InvalidArgument(format!(
                    "optimizer state lacks '{key}': load the state saved for this LoRA-Pro run"
                ))
            })?;
            let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            Array2::from_shape_vec(shape, values).map_err(|_| {
                AbbaError::InvalidArgument(format!("optimizer state '{key}' has the wrong shape"))
            })
        };
        let mut m = Vec::with_capacity(self.m.len());
        let mut v = Vec::with_capacity(self.v.len());
        for (i, old) in self.m.iter().enumerate() {
            m.push(fetch(format!("lorapro.m.{i}"), old.dim())?);
            v.push(fetch(format!("lorapro.v.{i}"), old.dim())?);
        }
        (self.m, self.v, self.step) = (m, v, step);
        Ok(())
    }

    fn step_count(&self) -> usize {
        self.step
    }

    fn state_bytes(&self) -> usize {
        self.m.iter().chain(&self.v).map(|a| a.len() * 4).sum()
    }
}
