//! Puts freshly initialised adapters on the chosen projections of a model, using the same initialisations as the
//! matrix studies ([`crate::adapter::init`]), and counts parameters the way PEFT reports them.

use std::fmt;

use candle_core::{Tensor, Var};

use super::config::AdapterConfig;
use crate::adapter::Method;
use crate::budget::{AbbaRankRule, sized};
use crate::error::{AbbaError, Result};
use crate::finetune::bridge::{from_array, to_array};
use crate::finetune::layers::AdapterWeights;
use crate::finetune::model::Llama;
use crate::rng::{SeededRng, derive, seeded};

/// Trainable and total parameters, printed like PEFT's `print_trainable_parameters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCount {
    pub trainable: usize,
    pub total: usize,
}

impl fmt::Display for ParamCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            self.trainable,
            self.total,
            100.0 * self.trainable as f64 / self.total.max(1) as f64
        )
    }
}

/// Adds the configured adapter to every targeted projection. Each module draws from its own seed stream
/// (derived from `seed` and its index), so results do not depend on iteration order or thread count.
/// Returns the trainable variables; for `full`, every base weight becomes trainable instead.
pub fn inject(
    model: &mut Llama,
    cfg: &AdapterConfig,
    seed: u64,
) -> Result<(Vec<(String, Var)>, ParamCount)> {
    if cfg.method == Method::Full {
        let vars = model.make_base_trainable()?;
        let n = model.num_base_params();
        return Ok((
            vars,
            ParamCount {
                trainable: n,
                total: n,
            },
        ));
    }
    for (index, (_, target, lin)) in model.linears_mut().into_iter().enumerate() {
        if !cfg.targets.contains(&target) {
            continue;
        }
        let mut rng = seeded(derive(seed, index as u64));
        let method = match cfg.budget {
            Some(budget) => sized(&cfg.method, budget, AbbaRankRule::Half, lin.shape()?)?,
            None => cfg.method.clone(),
        };
        let (weights, residual) = initial_adapter(&lin.weight, &method, &mut rng)?;
        if let Some(base) = residual {
            lin.weight = base;
        }
        lin.adapter = Some(weights);
        lin.dropout = cfg.dropout;
    }
    let vars = model.adapter_vars();
    let trainable = model.num_adapter_params();
    Ok((
        vars,
        ParamCount {
            trainable,
            total: model.num_base_params() + trainable,
        },
    ))
}

/// A freshly initialised adapter for a layer with frozen weight `weight` (out × in), on its device and dtype:
/// the method's initialisation ([`Method::init`]) on ndarray, copied into variables in factor-table order. When
/// the initialisation changes the base (ΔW₀ ≠ 0: PiSSA, OLoRA, ABBA's Table 3 variants) it also returns the
/// residual W0 − ΔW₀ the layer must hold, and the adapter remembers its initial values so that it can be saved for
/// the original base. `Full` has no adapter and is an error here.
pub fn initial_adapter(
    weight: &Tensor,
    method: &Method,
    rng: &mut SeededRng,
) -> Result<(AdapterWeights, Option<Tensor>)> {
    if *method == Method::Full {
        return Err(AbbaError::InvalidArgument(
            "full fine-tuning trains the base weights and has no adapter".into(),
        ));
    }
    let (dtype, device) = (weight.dtype(), weight.device().clone());
    let w0 = to_array(weight)?;
    let init = method.init::<f64, _>(w0.view(), rng)?;
    let adapter = init.adapter.as_adapter();
    let factors = adapter.factors();
    let values = method
        .factors(w0.dim())
        .iter()
        .map(|f| from_array(&factors[f.position].to_owned(), dtype, &device))
        .collect::<Result<Vec<_>>>()?;
    let vars = values
        .iter()
        .map(|t| Ok(Var::from_tensor(t)?))
        .collect::<Result<Vec<_>>>()?;
    let weights = AdapterWeights::new(method.clone(), vars, w0.dim())?;
    if init.residual_base.is_none() {
        return Ok((weights, None));
    }
    // The residual from the stored (rounded) θ₀, as a reload of the saved adapter will form it.
    let weights = weights.with_origin(values);
    let residual = weights.residual_base(weight)?;
    Ok((weights, residual))
}
