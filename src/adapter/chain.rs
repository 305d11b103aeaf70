//! ABBA chains: ΔW = s·⊙_{i=1..k} (B_i·A_i), the paper's Table 7 ablation (k = 2 is plain ABBA).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use serde_json::{Value, json};

use super::factor::{Factor, PeftFields};
use super::init::{Initialised, KaimingA, SvdMethod, kaiming_uniform, svd_factors};
use super::scaling::AbbaScale;
use super::{Adapter, MethodKind, check_pair, check_shape};
use crate::error::{AbbaError, Result};
use crate::linalg::{Real, gemm};

#[derive(Clone, Debug)]
pub struct AbbaChain<T> {
    /// (B_i, A_i) for each factor of the Hadamard product.
    pub pairs: Vec<(Array2<T>, Array2<T>)>,
    pub scale: T,
    pub convention: AbbaScale,
}

impl<T: Real> AbbaChain<T> {
    pub fn new(pairs: Vec<(Array2<T>, Array2<T>)>, convention: AbbaScale) -> Result<Self> {
        convention.validate()?;
        if pairs.is_empty() {
            return Err(AbbaError::InvalidArgument(
                "an ABBA chain needs at least one (B, A) pair".into(),
            ));
        }
        let mut shape = None;
        let mut ranks = Vec::with_capacity(pairs.len());
        for (b, a) in &pairs {
            let (m, r, n) = check_pair(
                &b.view(),
                &a.view(),
                "ABBA chain A_i (rows must equal B_i's columns)",
            )?;
            if let Some(s) = shape {
                check_shape("ABBA chain pair update B_i·A_i", s, (m, n))?;
            }
            shape = Some((m, n));
            ranks.push(r);
        }
        let scale = T::of(convention.value_for(&ranks));
        Ok(AbbaChain {
            pairs,
            scale,
            convention,
        })
    }

    pub fn ranks(&self) -> Vec<usize> {
        self.pairs.iter().map(|(_, a)| a.nrows()).collect()
    }

    fn products(&self) -> Vec<Array2<T>> {
        self.pairs
            .iter()
            .map(|(b, a)| gemm(b.view(), a.view()))
            .collect()
    }
}

impl<T: Real> Adapter<T> for AbbaChain<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::AbbaChain
    }
    fn shape(&self) -> (usize, usize) {
        (self.pairs[0].0.nrows(), self.pairs[0].1.ncols())
    }
    fn factor_names(&self) -> Vec<String> {
        (1..=self.pairs.len())
            .flat_map(|i| [format!("B{i}"), format!("A{i}")])
            .collect()
    }
    fn factors(&self) -> Vec<ArrayView2<'_, T>> {
        self.pairs
            .iter()
            .flat_map(|(b, a)| [b.view(), a.view()])
            .collect()
    }
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        self.pairs
            .iter_mut()
            .flat_map(|(b, a)| [b.view_mut(), a.view_mut()])
            .collect()
    }
    fn delta(&self) -> Array2<T> {
        let mut d = Array2::from_elem(self.shape(), self.scale);
        for p in self.products() {
            d *= &p;
        }
        d
    }
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape(), g.dim())?;
        let prods = self.products();
        let mut out = Vec::with_capacity(2 * prods.len());
        for (i, (b, a)) in self.pairs.iter().enumerate() {
            // Product of all the other factors: dividing by P_i would fail where it is zero.
            let mut others = &g * self.scale;
            for (j, p) in prods.iter().enumerate() {
                if j != i {
                    others *= p;
                }
            }
            out.push(gemm(others.view(), a.t()));
            out.push(gemm(b.t(), others.view()));
        }
        Ok(out)
    }
}

/// An ABBA chain as a method: the rank of each pair and the scale (the paper convention generalises to
/// Π α/√r_i).
#[derive(Clone, Debug, PartialEq)]
pub struct ChainSpec {
    pub ranks: Vec<usize>,
    pub scale: AbbaScale,
}

impl Default for ChainSpec {
    fn default() -> Self {
        ChainSpec {
            ranks: Vec::new(),
            scale: AbbaScale::Paper { alpha: 16.0 },
        }
    }
}

impl ChainSpec {
    /// A_i: r_i×n (`chain_A{i}`), B_i: m×r_i (`chain_B{i}`), listed A1, B1, A2, B2, …; the ndarray adapter holds
    /// B1, A1, B2, A2, ….
    pub fn factors(&self, (m, n): (usize, usize)) -> Vec<Factor> {
        self.ranks
            .iter()
            .enumerate()
            .flat_map(|(i, &r)| {
                let k = i + 1;
                [
                    Factor::new(&format!("A{k}"), &format!("chain_A{k}"), (r, n), 2 * i + 1),
                    Factor::new(&format!("B{k}"), &format!("chain_B{k}"), (m, r), 2 * i),
                ]
            })
            .collect()
    }
}

impl ChainSpec {
    /// Pair 1 from the top-r1 SVD of W0 (the paper's ABBA init), the middle pairs all-ones (1/√r_i entries, so
    /// B_i·A_i is the all-ones matrix that leaves a Hadamard product unchanged), the last pair B = 0 and A
    /// Kaiming-uniform: ΔW₀ = 0 and the last B learns from step 0. (The paper's Table 7 does not say how its chains
    /// start; this is the ABBA init extended.)
    pub fn init_adapter<T: Real, R: Rng + ?Sized>(
        &self,
        w0: ArrayView2<'_, T>,
        rng: &mut R,
    ) -> Result<Initialised<AbbaChain<T>, T>> {
        let (m, n) = w0.dim();
        let k = self.ranks.len();
        if k < 2 {
            return Err(AbbaError::InvalidArgument(
                "an ABBA chain to fine-tune needs at least two pairs (two is plain ABBA)".into(),
            ));
        }
        let mut pairs = Vec::with_capacity(k);
        for (i, &r) in self.ranks.iter().enumerate() {
            pairs.push(if i == 0 {
                svd_factors(w0, r, SvdMethod::Exact, rng)?
            } else if i + 1 == k {
                (
                    Array2::zeros((m, r)),
                    kaiming_uniform(r, n, KaimingA::Sqrt5, rng),
                )
            } else {
                let c = T::of(1.0 / (r as f64).sqrt());
                (Array2::from_elem((m, r), c), Array2::from_elem((r, n), c))
            });
        }
        Ok(Initialised {
            adapter: AbbaChain::new(pairs, self.scale)?,
            residual_base: None,
        })
    }

    /// Our `ABBA_CHAIN` format (docs/adapter-format.md).
    pub fn peft_config(&self, dropout: f32) -> Value {
        json!({
            "peft_type": "ABBA_CHAIN", "format_version": 1, "ranks": self.ranks,
            "scale": self.scale.value_for(&self.ranks), "scale_convention": self.scale.name(),
            "dropout": dropout,
        })
    }

    pub fn from_peft(f: &PeftFields<'_>) -> Result<ChainSpec> {
        let ranks: Vec<usize> = f
            .cfg
            .get("ranks")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|r| r as usize)
                    .collect()
            })
            .filter(|r: &Vec<usize>| !r.is_empty() && r.iter().all(|&x| x > 0))
            .ok_or_else(|| f.bad("field 'ranks' must be a list of positive integers".into()))?;
        Ok(ChainSpec {
            ranks,
            scale: AbbaScale::Explicit {
                scale: f.float("scale")?,
            },
        })
    }
}
