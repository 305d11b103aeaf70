//! Timing of fine-tuning on candle, shared by `abba bench --suite finetune|layer` and the `adapted_layer`
//! criterion bench: training steps of a tiny random Llama with each adapter, and one adapted layer's forward +
//! backward with the ABBA Khatri–Rao path or the materialised ΔW path forced. Speed is measured here, never
//! asserted in tests.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand_distr::{Distribution, Normal};

use crate::adapter::scaling::AbbaScale;
use crate::adapter::section::MethodSection;
use crate::adapter::{AbbaSpec, ForwardPath, Method};
use crate::error::{AbbaError, Result};
use crate::finetune::adapters::config::AdapterSection;
use crate::finetune::adapters::inject::inject;
use crate::finetune::data::Encoded;

use crate::finetune::layers::AdapterWeights;
use crate::finetune::layers::frozen::linear_t_plus;
use crate::finetune::model::{Llama, LlamaShape, ModelConfig};
use crate::finetune::optim::{AdamW, AdamWConfig, GradAccumulator};
use crate::finetune::train::shards::loss_and_grads;
use crate::rng::{SeededRng, derive, seeded};

/// The training benchmark: a random Llama of `shape`, one fixed batch of random token ids (every target counts in
/// the loss), `warmup` untimed steps and `steps` timed ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinetuneBenchSpec {
    pub shape: LlamaShape,
    pub batch: usize,
    pub seq: usize,
    /// Shards of the batch run in parallel ([`crate::finetune::train::TrainConfig::shards`]).
    pub shards: crate::finetune::train::Shards,
    pub warmup: usize,
    pub steps: usize,
    pub seed: u64,
}

impl Default for FinetuneBenchSpec {
    /// A ~3M-parameter Llama (byte-level vocabulary of 259, hidden 256, 4 layers, GQA 8/4 heads), batch 8 × 128.
    fn default() -> Self {
        FinetuneBenchSpec {
            shape: LlamaShape {
                vocab_size: 259,
                hidden_size: 256,
                intermediate_size: 688,
                num_hidden_layers: 4,
                num_attention_heads: 8,
                num_key_value_heads: 4,
                max_position_embeddings: 256,
            },
            batch: 8,
            seq: 128,
            shards: crate::finetune::train::TrainConfig::default().shards,
            warmup: 2,
            steps: 10,
            seed: 0,
        }
    }
}

/// The methods the training benchmark compares: LoRA r = 8, HiRA r = 8 and ABBA r1 = r2 = 4 at equal budget per
/// projection (8·(m+n) parameters each), DoRA r = 8 (LoRA's plus an m-vector of magnitudes), and full
/// fine-tuning. All seven projections are adapted.
pub const FINETUNE_METHODS: [&str; 5] = ["lora", "hira", "abba", "dora", "full"];

/// The `[adapter]` section of a benchmark method (one of [`FINETUNE_METHODS`]); defaults elsewhere (α = 16).
pub fn bench_adapter(method: &str) -> Result<AdapterSection> {
    let (r, r1, r2) = match method {
        "lora" | "hira" | "dora" => (Some(8), None, None),
        "abba" => (None, Some(4), Some(4)),
        "full" => (None, None, None),
        other => {
            return Err(AbbaError::UnknownName {
                what: "benchmark method",
                name: other.into(),
                valid: FINETUNE_METHODS.iter().map(|s| s.to_string()).collect(),
            });
        }
    };
    Ok(AdapterSection {
        method: MethodSection {
            r,
            r1,
            r2,
            ..MethodSection::named(method)
        },
        dropout: 0.0,
        target_modules: None,
        budget_rank: None,
    })
}

/// What one configuration of the training benchmark measured.
#[derive(Clone, Debug, PartialEq)]
pub struct FinetuneBenchResult {
    pub method: String,
    pub trainable_params: usize,
    pub total_params: usize,
    /// Tokens per step (batch × seq: every position is a forward and a loss position).
    pub tokens_per_step: usize,
    pub ms_per_step: f64,
    pub tokens_per_s: f64,
    pub final_loss: f64,
}

/// Times `spec.steps` training steps (forward, masked cross-entropy, backward, AdamW with lr 1e-3 and no weight
/// decay) of a random f32 Llama with `method`'s adapter on the CPU, after `spec.warmup` untimed steps.
pub fn finetune_steps(spec: &FinetuneBenchSpec, method: &str) -> Result<FinetuneBenchResult> {
    if spec.steps == 0 || spec.batch == 0 || spec.seq == 0 {
        return Err(AbbaError::InvalidArgument(
            "the training benchmark needs steps, batch and seq ≥ 1".into(),
        ));
    }
    if spec.seq > spec.shape.max_position_embeddings {
        return Err(AbbaError::InvalidArgument(format!(
            "seq {} exceeds the model's {} positions",
            spec.seq, spec.shape.max_position_embeddings
        )));
    }
    let device = Device::Cpu;
    let cfg = ModelConfig::llama(spec.shape)?;
    let mut model = Llama::random(cfg, 0.02, spec.seed, &device)?;
    let adapter = bench_adapter(method)?.resolve()?;
    let (vars, count) = inject(&mut model, &adapter, derive(spec.seed, 1))?;
    let vars: Vec<Var> = vars.into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;

    let mut rng = seeded(derive(spec.seed, 2));
    let vocab = spec.shape.vocab_size as u32;
    let rows: Vec<Encoded> = (0..spec.batch)
        .map(|_| Encoded {
            ids: (0..=spec.seq)
                .map(|_| rand::Rng::random_range(&mut rng, 0..vocab))
                .collect(),
            loss_mask: vec![1.0; spec.seq + 1],
        })
        .collect();
    let rows: Vec<&Encoded> = rows.iter().collect();
    // The training loop's own step (trainer.rs), sharding included.
    let mut step = || -> Result<f64> {
        let mut acc = GradAccumulator::new(&vars);
        let (loss, parts) =
            loss_and_grads(&model, &acc, &rows, 0, spec.shards, derive(spec.seed, 3), 1)?;
        acc.add_parts(parts)?;
        opt.step(&acc.take()?, 1e-3)?;
        Ok(loss)
    };
    for _ in 0..spec.warmup {
        step()?;
    }
    let clock = Instant::now();
    let mut loss = f64::NAN;
    for _ in 0..spec.steps {
        loss = step()?;
    }
    let secs = clock.elapsed().as_secs_f64();
    let tokens = spec.batch * spec.seq;
    Ok(FinetuneBenchResult {
        method: method.into(),
        trainable_params: count.trainable,
        total_params: count.total,
        tokens_per_step: tokens,
        ms_per_step: secs * 1e3 / spec.steps as f64,
        tokens_per_s: (tokens * spec.steps) as f64 / secs.max(1e-12),
        final_loss: loss,
    })
}

/// One adapted linear layer y = x·W0ᵀ + x·ΔWᵀ with an ABBA adapter — the frozen product and adapter layer that
/// training uses ([`linear_t_plus`], [`AdapterWeights::forward_with`]) — a batch of rows x and a fixed upstream
/// gradient G: forward + backward is the gradient of ⟨y, G⟩ with respect to the four factors (W0 and x are
/// constants).
pub struct LayerProblem {
    pub w0: Tensor,
    pub x: Tensor,
    pub upstream: Tensor,
    pub adapter: AdapterWeights,
}

fn randn(
    rows: usize,
    cols: usize,
    std: f32,
    rng: &mut SeededRng,
    device: &Device,
) -> Result<Tensor> {
    let normal = Normal::new(0.0f32, std).map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
    let data: Vec<f32> = (0..rows * cols).map(|_| normal.sample(rng)).collect();
    Ok(Tensor::from_vec(data, (rows, cols), device)?)
}

impl LayerProblem {
    /// W0 ~ N(0, 1/n) (m×n), x and G ~ N(0, 1) (batch×n, batch×m), factors ~ N(0, 0.02²), s = 1, all f32.
    pub fn new(m: usize, n: usize, r1: usize, r2: usize, batch: usize, seed: u64) -> Result<Self> {
        if [m, n, r1, r2, batch].contains(&0) {
            return Err(AbbaError::InvalidArgument(
                "layer sizes, ranks and batch must be ≥ 1".into(),
            ));
        }
        let device = Device::Cpu;
        let mut rng = seeded(seed);
        let w0 = randn(m, n, 1.0 / (n as f32).sqrt(), &mut rng, &device)?;
        let x = randn(batch, n, 1.0, &mut rng, &device)?;
        let upstream = randn(batch, m, 1.0, &mut rng, &device)?;
        let method = Method::Abba(AbbaSpec {
            r1,
            r2,
            scale: AbbaScale::Explicit { scale: 1.0 },
            ..AbbaSpec::default()
        });
        let vars = method
            .factors((m, n))
            .iter()
            .map(|f| {
                Ok(Var::from_tensor(&randn(
                    f.shape.0, f.shape.1, 0.02, &mut rng, &device,
                )?)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LayerProblem {
            w0,
            x,
            upstream,
            adapter: AdapterWeights::new(method, vars, (m, n))?,
        })
    }

    /// (m, n, r1, r2, batch).
    pub fn dims(&self) -> Result<(usize, usize, usize, usize, usize)> {
        let (m, n) = self.w0.dims2()?;
        let ranks = self.adapter.method.ranks();
        Ok((m, n, ranks[0], ranks[1], self.x.dim(0)?))
    }

    /// The path [`ForwardPath::cheapest`] picks for this layer and batch.
    pub fn cost_model_pick(&self) -> Result<ForwardPath> {
        let (m, n, r1, r2, batch) = self.dims()?;
        Ok(ForwardPath::cheapest((m, n), r1, r2, batch))
    }

    /// The layer's output on a forced path, as `AdaptedLinear::forward` computes it without dropout: the
    /// Khatri–Rao term beside the frozen product, or the materialised ΔW merged into it, x·(W0 + ΔW)ᵀ.
    pub fn forward(&self, path: ForwardPath) -> Result<Tensor> {
        match path {
            ForwardPath::KhatriRao => {
                let delta = self.adapter.forward_with(&self.x, &self.w0, path)?;
                linear_t_plus(&self.x, &self.w0, &delta)
            }
            ForwardPath::Materialised => {
                self.adapter
                    .merged_output(&self.x, &self.w0)?
                    .ok_or_else(|| {
                        AbbaError::InvalidArgument("the layer bench's W0 must be f32 or f64".into())
                    })
            }
        }
    }

    /// Forward, then the gradients of ⟨y, G⟩ for (A1, B1, A2, B2).
    pub fn forward_backward(&self, path: ForwardPath) -> Result<[Tensor; 4]> {
        let y = self.forward(path)?;
        let grads = (y * &self.upstream)?.sum_all()?.backward()?;
        let get = |v: &Var| -> Result<Tensor> {
            grads
                .get(v.as_tensor())
                .cloned()
                .ok_or_else(|| AbbaError::InvalidArgument("a factor received no gradient".into()))
        };
        let v = self.adapter.vars();
        Ok([get(v[0])?, get(v[1])?, get(v[2])?, get(v[3])?])
    }
}

/// Per-iteration wall times of a loop, milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Timings {
    pub ms: Vec<f64>,
}

impl Timings {
    pub fn median(&self) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
        }
    }

    pub fn min(&self) -> f64 {
        self.ms.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Times `iters` forward + backward passes of `problem` along `path`, each separately, after `warmup` untimed ones.
pub fn time_layer(
    problem: &LayerProblem,
    path: ForwardPath,
    warmup: usize,
    iters: usize,
) -> Result<Timings> {
    for _ in 0..warmup {
        problem.forward_backward(path)?;
    }
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let grads = problem.forward_backward(path)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        drop(grads);
    }
    Ok(Timings { ms })
}

/// The path's name in CSVs and on the command line.
pub fn path_name(path: ForwardPath) -> &'static str {
    match path {
        ForwardPath::KhatriRao => "khatri-rao",
        ForwardPath::Materialised => "materialised",
    }
}

pub fn parse_path(name: &str) -> Result<ForwardPath> {
    match name {
        "khatri-rao" | "kr" => Ok(ForwardPath::KhatriRao),
        "materialised" | "materialized" | "mat" => Ok(ForwardPath::Materialised),
        other => Err(AbbaError::UnknownName {
            what: "ABBA forward path",
            name: other.into(),
            valid: vec!["khatri-rao".into(), "materialised".into()],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_paths_agree_in_value_and_gradient() {
        let p = LayerProblem::new(24, 20, 3, 2, 5, 7).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let s = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d <= 1e-5 * s.max(1e-6), "diff {d} vs scale {s}");
        };
        close(
            &p.forward(ForwardPath::KhatriRao).unwrap(),
            &p.forward(ForwardPath::Materialised).unwrap(),
        );
        let kr = p.forward_backward(ForwardPath::KhatriRao).unwrap();
        let mat = p.forward_backward(ForwardPath::Materialised).unwrap();
        for (a, b) in kr.iter().zip(&mat) {
            close(a, b);
        }
    }

    #[test]
    fn bench_adapters_have_equal_budgets() {
        let budget = |m: &str| {
            let mut model = Llama::random(
                ModelConfig::llama(FinetuneBenchSpec::default().shape).unwrap(),
                0.02,
                0,
                &Device::Cpu,
            )
            .unwrap();
            inject(&mut model, &bench_adapter(m).unwrap().resolve().unwrap(), 0)
                .unwrap()
                .1
                .trainable
        };
        assert_eq!(budget("lora"), budget("abba"));
        assert_eq!(budget("lora"), budget("hira"));
        // DoRA adds one magnitude per output feature of each adapted projection.
        let s = FinetuneBenchSpec::default().shape;
        let kv = s.num_key_value_heads * s.hidden_size / s.num_attention_heads;
        let outputs = 3 * s.hidden_size + 2 * kv + 2 * s.intermediate_size;
        assert_eq!(
            budget("dora"),
            budget("lora") + s.num_hidden_layers * outputs
        );
        assert!(bench_adapter("loha").is_err());
    }

    #[test]
    fn a_short_training_run_reports_sane_numbers() {
        let spec = FinetuneBenchSpec {
            shape: LlamaShape {
                vocab_size: 32,
                hidden_size: 16,
                intermediate_size: 24,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                num_key_value_heads: 1,
                max_position_embeddings: 16,
            },
            batch: 2,
            seq: 8,
            warmup: 0,
            steps: 2,
            seed: 0,
            ..Default::default()
        };
        let r = finetune_steps(&spec, "abba").unwrap();
        assert_eq!(r.tokens_per_step, 16);
        assert!(r.tokens_per_s > 0.0 && r.final_loss.is_finite());
    }
}
