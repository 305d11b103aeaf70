//! The toy's network: inputs → hidden (ReLU) → classes, two [`AdaptedLinear`] layers, so the adapters under test
//! are exactly the ones the transformer path uses. The paper's Fig. 1 says only "a 2-layer MLP"; ReLU and
//! PyTorch's `nn.Linear` initialisation are our choices.

use candle_core::{D, DType, Device, Tensor, Var};
use ndarray::Array2;
use rand::Rng;

use crate::adapter::init::{KaimingA, kaiming_uniform};
use crate::error::Result;
use crate::finetune::bridge::from_array;
use crate::finetune::layers::{AdaptedLinear, ForwardCtx};
use crate::rng::{derive, seeded};

#[derive(Clone, Debug)]
pub struct Mlp {
    pub fc1: AdaptedLinear,
    pub fc2: AdaptedLinear,
}

impl Mlp {
    /// Weights and biases drawn as `torch.nn.Linear` does (U(±1/√fan_in) for both), each layer from its own
    /// stream of `seed`.
    pub fn new(
        inputs: usize,
        hidden: usize,
        classes: usize,
        dtype: DType,
        device: &Device,
        seed: u64,
    ) -> Result<Mlp> {
        let layer = |out: usize, inp: usize, stream: u64| -> Result<AdaptedLinear> {
            let mut rng = seeded(derive(seed, stream));
            let w = kaiming_uniform::<f64, _>(out, inp, KaimingA::Sqrt5, &mut rng);
            // torch's bias bound is 1/√fan_in, the same as Kaiming(a=√5)'s weight bound.
            let bound = KaimingA::Sqrt5.bound(inp);
            let b = Array2::from_shape_simple_fn((1, out), || rng.random_range(-bound..=bound));
            let b = from_array(&b, dtype, device)?.flatten_all()?;
            Ok(AdaptedLinear::new(from_array(&w, dtype, device)?, Some(b)))
        };
        Ok(Mlp {
            fc1: layer(hidden, inputs, 1)?,
            fc2: layer(classes, hidden, 2)?,
        })
    }

    pub fn layers(&self) -> [&AdaptedLinear; 2] {
        [&self.fc1, &self.fc2]
    }

    pub fn layers_mut(&mut self) -> [&mut AdaptedLinear; 2] {
        [&mut self.fc1, &mut self.fc2]
    }

    /// Logits, `batch × classes`.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let h = self.fc1.forward(x, ctx)?.relu()?;
        self.fc2.forward(&h, ctx)
    }

    /// Mean cross-entropy of the logits against u32 labels.
    pub fn loss(&self, x: &Tensor, y: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        Ok(candle_nn::loss::cross_entropy(&self.forward(x, ctx)?, y)?)
    }

    /// Mean loss and accuracy (argmax over all classes) in evaluation mode, in chunks to bound memory.
    pub fn evaluate(&self, x: &Tensor, y: &Tensor) -> Result<(f64, f64)> {
        let n = x.dim(0)?;
        if n == 0 {
            return Ok((f64::NAN, f64::NAN));
        }
        let ctx = ForwardCtx::eval();
        let (mut loss_sum, mut correct) = (0.0, 0usize);
        const CHUNK: usize = 1024;
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let (xc, yc) = (x.narrow(0, start, len)?, y.narrow(0, start, len)?);
            let logits = self.forward(&xc, &ctx)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &yc)?;
            loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * len as f64;
            let pred = logits.argmax(D::Minus1)?;
            let hits = pred
                .eq(&yc)?
                .to_dtype(DType::U32)?
                .sum_all()?
                .to_scalar::<u32>()?;
            correct += hits as usize;
        }
        Ok((loss_sum / n as f64, correct as f64 / n as f64))
    }

    /// Turns every weight and bias into a [`Var`] (full training) and returns them; the layers keep the vars'
    /// tensors, so gradients reach the vars and `Var::set` updates the layers. Fresh storage: the tensors the
    /// model held before are never modified.
    pub fn make_base_trainable(&mut self) -> Result<Vec<Var>> {
        let mut vars = Vec::new();
        for layer in self.layers_mut() {
            let var = Var::from_tensor(&layer.weight.detach())?;
            layer.weight = var.as_tensor().clone();
            vars.push(var);
            if let Some(b) = &mut layer.bias {
                let var = Var::from_tensor(&b.detach())?;
                *b = var.as_tensor().clone();
                vars.push(var);
            }
        }
        Ok(vars)
    }

    /// Detaches weights and biases into their own storage: afterwards no gradient reaches them and no
    /// variable of an earlier training phase can change them.
    pub fn freeze(&mut self) -> Result<()> {
        for layer in self.layers_mut() {
            layer.weight = layer.weight.detach().copy()?;
            if let Some(b) = &mut layer.bias {
                *b = b.detach().copy()?;
            }
        }
        Ok(())
    }

    /// Weight and bias elements (the parameter count of full fine-tuning).
    pub fn num_base_params(&self) -> usize {
        self.layers()
            .iter()
            .map(|l| l.weight.elem_count() + l.bias.as_ref().map_or(0, |b| b.elem_count()))
            .sum()
    }

    /// Adapter factor elements over both layers.
    pub fn num_adapter_params(&self) -> usize {
        self.layers()
            .iter()
            .filter_map(|l| l.adapter.as_ref())
            .map(|a| a.num_params())
            .sum()
    }
}
