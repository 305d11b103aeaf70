//! The trainable part of an adapted projection y = x·(W0 + ΔW)ᵀ, as candle variables.
//!
//! Which variables exist, their names and shapes come from the method's factor table ([`Method::factors`]);
//! this file only computes with them. Shapes follow PEFT: A is r×n (in-features), B is m×r (out-features), so
//! B·A has W0's m×n shape.

use candle_core::{DType, Tensor, Var};

use super::methods;
use super::products::{product, product_t};
use crate::adapter::mora::MoraLayout;
use crate::adapter::{ForwardPath, Method, MoraSpec};
use crate::error::{AbbaError, Result};

#[derive(Clone, Debug)]
pub struct AdapterWeights {
    /// The method, sized for this layer.
    pub method: Method,
    /// One variable per row of the method's factor table, in its order.
    vars: Vec<Var>,
    /// (m, n) of the adapted layer.
    shape: (usize, usize),
    /// The factors' initial values when the initialisation changed the base (PiSSA, OLoRA, ABBA's Table 3
    /// variants): the layer then holds W0 − ΔW(θ₀), and the update relative to the original W0 is
    /// ΔW(θ) − ΔW(θ₀). Frozen tensors, in factor-table order.
    pub origin: Option<Vec<Tensor>>,
}

impl AdapterWeights {
    /// Wraps variables given in factor-table order, checking their count and shapes against the table for an
    /// m×n layer.
    pub fn new(method: Method, vars: Vec<Var>, shape: (usize, usize)) -> Result<Self> {
        let table = method.factors(shape);
        if table.len() != vars.len() {
            return Err(AbbaError::InvalidArgument(format!(
                "{} needs {} factors, got {}",
                method.label(),
                table.len(),
                vars.len()
            )));
        }
        for (f, v) in table.iter().zip(&vars) {
            if v.dims() != [f.shape.0, f.shape.1] {
                return Err(AbbaError::ShapeMismatch {
                    what: format!("{} factor {}", method.name(), f.name),
                    expected: f.shape,
                    got: v.dims2().unwrap_or((0, 0)),
                });
            }
        }
        Ok(AdapterWeights {
            method,
            vars,
            shape,
            origin: None,
        })
    }

    /// The same adapter remembering its initial values (see [`Self::origin`]).
    pub fn with_origin(mut self, origin: Vec<Tensor>) -> Self {
        self.origin = Some(origin);
        self
    }

    /// ΔW(θ₀) of the initial values, if the initialisation changed the base: what the base lost, W0 minus the
    /// residual the layer holds.
    pub fn origin_delta(&self, w0: &Tensor) -> Result<Option<Tensor>> {
        let Some(origin) = &self.origin else {
            return Ok(None);
        };
        let vars = origin
            .iter()
            .map(|t| Ok(Var::from_tensor(t)?))
            .collect::<Result<Vec<_>>>()?;
        let initial = AdapterWeights::new(self.method.clone(), vars, self.shape)?;
        Ok(Some(initial.delta(w0)?))
    }

    /// The base the adapter trains on when its initialisation changed it, W0 − ΔW(θ₀): formed in f64 from the
    /// stored θ₀ and rounded once to W0's dtype, so that training and a reload from the saved file build the same
    /// tensor (ΔW(θ₀) can be as large as W0, and an f32 difference of the two would not round the same way).
    pub fn residual_base(&self, w0: &Tensor) -> Result<Option<Tensor>> {
        let Some(origin) = &self.origin else {
            return Ok(None);
        };
        let w0_64 = w0.to_dtype(DType::F64)?;
        let vars = origin
            .iter()
            .map(|t| Ok(Var::from_tensor(&t.to_dtype(DType::F64)?)?))
            .collect::<Result<Vec<_>>>()?;
        let initial = AdapterWeights::new(self.method.clone(), vars, self.shape)?;
        let residual = (&w0_64 - initial.delta(&w0_64)?)?;
        Ok(Some(residual.to_dtype(w0.dtype())?))
    }

    pub fn vars(&self) -> Vec<&Var> {
        self.vars.iter().collect()
    }

    /// Names of the factors in [`Self::vars`] order, as they appear in saved files.
    pub fn var_names(&self) -> Vec<String> {
        self.method
            .factors(self.shape)
            .into_iter()
            .map(|f| f.key.trim_end_matches(".weight").to_string())
            .collect()
    }

    /// The variable of the factor called `name` (`A`, `B1`, …).
    pub fn var(&self, name: &str) -> Result<&Var> {
        let table = self.method.factors(self.shape);
        table
            .iter()
            .position(|f| f.name == name)
            .map(|i| &self.vars[i])
            .ok_or_else(|| {
                AbbaError::InvalidArgument(format!("{} has no factor {name}", self.method.name()))
            })
    }

    fn t(&self, name: &str) -> Result<&Tensor> {
        Ok(self.var(name)?.as_tensor())
    }

    /// (m, n) of the adapted layer.
    pub fn layer_shape(&self) -> (usize, usize) {
        self.shape
    }

    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// ΔW as an m×n tensor (needs W0 for HiRA).
    pub fn delta(&self, w0: &Tensor) -> Result<Tensor> {
        Ok(match &self.method {
            Method::Lora(s) => (product(self.t("B")?, self.t("A")?)? * s.scale.value(s.r))?,
            Method::Hira(_) => (w0 * product(self.t("B")?, self.t("A")?)?)?,
            Method::Abba(s) => {
                let p = product(self.t("B1")?, self.t("A1")?)?;
                let q = product(self.t("B2")?, self.t("A2")?)?;
                ((p * q)? * s.scale.value(s.r1, s.r2))?
            }
            Method::AbbaChain(s) => {
                let t: Vec<&Tensor> = self.vars.iter().map(|v| v.as_tensor()).collect();
                methods::chain::delta(&t, s.scale.value_for(&s.ranks))?
            }
            Method::Dora(s) => methods::dora::delta(w0, &self.dora(s.scale.value(s.r))?)?,
            Method::Lokr(s) => {
                let (w1, w2) = self.kron_parts()?;
                methods::lokr::delta(&w1, &w2, s.scale())?
            }
            Method::Mora(s) => methods::mora::delta(self.t("M")?, &self.mora_layout(s)?)?,
            Method::Kradapter(s) => {
                methods::kradapter::delta(self.t("U")?, self.t("V")?, self.shape, s.scale)?
            }
            Method::Full => return Err(self.not_a_layer()),
        })
    }

    /// LoKr's W1 and W2 (each full, or the product of its low-rank pair).
    fn kron_parts(&self) -> Result<(Tensor, Tensor)> {
        let table = self.method.factors(self.shape);
        let of = |w: &str| -> Result<Tensor> {
            let parts: Vec<&Tensor> = table
                .iter()
                .zip(&self.vars)
                .filter(|(f, _)| f.name.starts_with(w))
                .map(|(_, v)| v.as_tensor())
                .collect();
            methods::lokr::part(&parts)
        };
        Ok((of("w1")?, of("w2")?))
    }

    fn mora_layout(&self, s: &MoraSpec) -> Result<MoraLayout> {
        MoraLayout::new(self.shape, s.r_hat, s.kind)
    }

    /// The adapter's contribution x·ΔWᵀ for rows x (N×n). ABBA picks the Khatri–Rao or materialised path with
    /// the same cost model as the matrix code ([`ForwardPath::cheapest`]).
    pub fn forward(&self, x: &Tensor, w0: &Tensor) -> Result<Tensor> {
        let (m, n) = w0.dims2()?;
        let path = match &self.method {
            Method::Abba(s) => ForwardPath::cheapest((m, n), s.r1, s.r2, x.dim(0)?),
            _ => ForwardPath::Materialised,
        };
        self.forward_with(x, w0, path)
    }

    /// As [`Self::forward`] with ABBA's path forced (other methods have one path).
    pub fn forward_with(&self, x: &Tensor, w0: &Tensor, path: ForwardPath) -> Result<Tensor> {
        match &self.method {
            Method::Lora(s) => {
                // The scale goes into the small factor, not into the N×m product.
                let b = (self.t("B")? * s.scale.value(s.r))?;
                product_t(&product_t(x, self.t("A")?)?, &b)
            }
            Method::Hira(_) => product_t(x, &self.delta(w0)?),
            Method::Abba(s) => match path {
                ForwardPath::KhatriRao => {
                    let (b_kr, a_kr) = khatri_rao(
                        self.t("A1")?,
                        self.t("B1")?,
                        self.t("A2")?,
                        self.t("B2")?,
                        s.scale.value(s.r1, s.r2),
                    )?;
                    product_t(&product_t(x, &a_kr)?, &b_kr)
                }
                ForwardPath::Materialised => product_t(x, &self.delta(w0)?),
            },
            Method::AbbaChain(_) | Method::Kradapter(_) => product_t(x, &self.delta(w0)?),
            Method::Dora(s) => methods::dora::forward(x, w0, &self.dora(s.scale.value(s.r))?),
            Method::Lokr(s) => {
                let (w1, w2) = self.kron_parts()?;
                methods::lokr::forward(x, &w1, &w2, s.scale())
            }
            Method::Mora(s) => methods::mora::forward(x, self.t("M")?, &self.mora_layout(s)?),
            Method::Full => Err(self.not_a_layer()),
        }
    }

    /// The adapted layer's whole output x·W0ᵀ + adapter(x) (bias aside) when the adapter's input is x itself, for
    /// methods that rescale the frozen product rather than add to it (DoRA) and for those that form ΔW anyway
    /// (HiRA, ABBA on its materialised path, chains, KRAdapter): x·(W0 + ΔW)ᵀ is one product over the rows
    /// forward and two backward (∂x and ∂ΔW) instead of two and three. `None` for the others, and for these in a
    /// 16-bit W0, where W0 + ΔW would round away the part of ΔW below about |W0|·2⁻⁹ (most of it early in training;
    /// PEFT keeps the two products apart too).
    pub fn layer_output(&self, x: &Tensor, w0: &Tensor) -> Result<Option<Tensor>> {
        match &self.method {
            Method::Dora(s) => {
                methods::dora::layer(x, w0, &self.dora(s.scale.value(s.r))?).map(Some)
            }
            Method::Hira(_) | Method::AbbaChain(_) | Method::Kradapter(_) => {
                self.merged_output(x, w0)
            }
            Method::Abba(s)
                if ForwardPath::cheapest(w0.dims2()?, s.r1, s.r2, x.dim(0)?)
                    == ForwardPath::Materialised =>
            {
                self.merged_output(x, w0)
            }
            _ => Ok(None),
        }
    }

    /// x·(W0 + ΔW)ᵀ, or `None` for a 16-bit W0 (see [`Self::layer_output`]).
    pub fn merged_output(&self, x: &Tensor, w0: &Tensor) -> Result<Option<Tensor>> {
        if !matches!(w0.dtype(), DType::F32 | DType::F64) {
            return Ok(None);
        }
        Ok(Some(product_t(x, &(w0 + self.delta(w0)?)?)?))
    }

    /// DoRA's factors at scale `s`.
    fn dora(&self, s: f64) -> Result<methods::dora::Factors<'_>> {
        Ok(methods::dora::Factors {
            a: self.t("A")?,
            b: self.t("B")?,
            mag: self.t("magnitude")?,
            s,
        })
    }

    fn not_a_layer(&self) -> AbbaError {
        AbbaError::Unsupported {
            what: format!("{} as a layer adapter", self.method.name()),
            message: "full fine-tuning trains the base weights, not an adapter".into(),
        }
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<AdapterWeights> {
        let vars = self
            .vars
            .iter()
            .map(|v| Ok(Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?))
            .collect::<Result<Vec<_>>>()?;
        let origin = match &self.origin {
            Some(o) => Some(
                o.iter()
                    .map(|t| t.to_dtype(dtype))
                    .collect::<candle_core::Result<Vec<_>>>()?,
            ),
            None => None,
        };
        Ok(AdapterWeights {
            method: self.method.clone(),
            vars,
            shape: self.shape,
            origin,
        })
    }
}

/// s·B_kr (m × r1r2, row-wise Kronecker of B1, B2, scaled) and A_kr (r1r2 × n, column-wise Kronecker of A1,
/// A2), so that s·(B1A1)⊙(B2A2) = (s·B_kr)·A_kr without forming an m×n matrix.
pub fn khatri_rao(
    a1: &Tensor,
    b1: &Tensor,
    a2: &Tensor,
    b2: &Tensor,
    scale: f64,
) -> Result<(Tensor, Tensor)> {
    let b_kr = crate::finetune::ops::khatri_rao::khatri_rao_rows(b1, b2, scale)?;
    let a_kr = crate::finetune::ops::khatri_rao::khatri_rao_cols(a1, a2)?;
    Ok((b_kr, a_kr))
}
