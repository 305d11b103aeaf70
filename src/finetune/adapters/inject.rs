//! Puts freshly initialised adapters on the chosen projections of a model, using the same initialisations as the
//! matrix studies ([`crate::adapter::init`]), and counts parameters the way PEFT reports them.

use std::fmt;

use candle_core::{Tensor, Var};

use super::config::AdapterConfig;
use crate::adapter::Method;
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
        let weights = initial_adapter(&lin.weight, &cfg.method, &mut rng)?;
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
/// the method's initialisation ([`Method::init`]) on ndarray, copied into variables in factor-table order.
/// `Full` has no adapter and is an error here.
pub fn initial_adapter(
    weight: &Tensor,
    method: &Method,
    rng: &mut SeededRng,
) -> Result<AdapterWeights> {
    if *method == Method::Full {
        return Err(AbbaError::InvalidArgument(
            "full fine-tuning trains the base weights and has no adapter".into(),
        ));
    }
    let (dtype, device) = (weight.dtype(), weight.device().clone());
    let w0 = to_array(weight)?;
    let init = method.init::<f64, _>(w0.view(), rng)?;
    reject_residual(init.residual_base.is_some(), method)?;
    let adapter = init.adapter.as_adapter();
    let factors = adapter.factors();
    let vars = method
        .factors(w0.dim())
        .iter()
        .map(|f| {
            let values = factors[f.position].to_owned();
            Ok(Var::from_tensor(&from_array(&values, dtype, &device)?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    AdapterWeights::new(method.clone(), vars, w0.dim())
}

/// Inits with ΔW₀ ≠ 0 (PiSSA, most Table 3 variants) would change the frozen base, and an adapter file alone could
/// no longer reproduce the model; they stay in the matrix studies, where the residual is explicit.
fn reject_residual(has_residual: bool, method: &Method) -> Result<()> {
    if has_residual {
        return Err(AbbaError::Unsupported {
            what: format!("this {} init in fine-tuning", method.name()),
            message: "it changes the base weights (ΔW₀ ≠ 0); use LoRA init kaiming/gaussian or ABBA init paper/svd-second"
                .into(),
        });
    }
    Ok(())
}
