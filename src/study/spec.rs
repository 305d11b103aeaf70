//! Study specifications (`experiments/*.toml`): a grid over targets × methods × budgets × ABBA rank rules ×
//! solvers × seeds.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::adapter::scaling::{AbbaScale, LoraScale};
use crate::adapter::section::{Defaults, MethodEntry};
use crate::adapter::{Method, MethodKind};
use crate::budget::AbbaRankRule;
use crate::error::{AbbaError, Result};
use crate::fit::SolverSpec;
use crate::fit::start::FitInit;
use crate::target::TargetSpec;

/// Working precision of the fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    F64,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
    pub fn epsilon(self) -> f64 {
        match self {
            Dtype::F32 => f32::EPSILON as f64,
            Dtype::F64 => f64::EPSILON,
        }
    }
}

/// A solver, optionally restricted to some methods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SolverEntry {
    #[serde(flatten)]
    pub solver: SolverSpec,
    /// Methods this solver is used for (default: every method it supports).
    #[serde(default)]
    pub methods: Option<Vec<MethodKind>>,
    /// Where this solver's fits start, in place of the study's `init` (e.g. LoRA-Pro from the fine-tuning init).
    #[serde(default)]
    pub init: Option<FitInit>,
}

/// One study, as written in TOML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    pub name: String,
    /// Shape of generated targets (loaded ones bring their own; needed only when some target is generated).
    #[serde(default)]
    pub rows: Option<usize>,
    #[serde(default)]
    pub cols: Option<usize>,
    pub targets: Vec<TargetSpec>,
    /// Method names (`"lora"`, `"abba"`, …) or tables spelled as a fine-tuning `[adapter]` without sizes
    /// (`{ method = "abba", scale = "paper", alpha = 16 }`); the budget sizes them.
    pub methods: Vec<MethodEntry>,
    /// Budgets as LoRA ranks r (r·(m+n) parameters) …
    #[serde(default)]
    pub ranks: Vec<usize>,
    /// … or as parameter counts.
    #[serde(default)]
    pub params: Vec<usize>,
    /// ABBA rank rules: "half", "full", "split:R1".
    #[serde(default = "default_rules")]
    pub abba_rules: Vec<String>,
    /// Explicit ABBA chains (rank lists), fitted in addition to the budgeted methods.
    #[serde(default)]
    pub chains: Vec<Vec<usize>>,
    pub solvers: Vec<SolverEntry>,
    #[serde(default = "default_init")]
    pub init: FitInit,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub dtype: Dtype,
    /// The "pretrained" W0 that HiRA, hira-structured targets and the paper init use.
    #[serde(default)]
    pub w0: Option<TargetSpec>,
    #[serde(default = "default_abba_scale")]
    pub abba_scale: AbbaScale,
    #[serde(default = "default_lora_scale")]
    pub lora_scale: LoraScale,
}

fn default_rules() -> Vec<String> {
    vec!["half".into()]
}
fn default_init() -> FitInit {
    FitInit::TargetSvd { noise: 0.01 }
}
fn default_seeds() -> Vec<u64> {
    vec![0]
}
/// In a pure fit the scale only reparametrises; s = 1 keeps the factors O(1).
fn default_abba_scale() -> AbbaScale {
    AbbaScale::Explicit { scale: 1.0 }
}
fn default_lora_scale() -> LoraScale {
    LoraScale::Explicit { scale: 1.0 }
}

impl StudySpec {
    /// Parses TOML; errors carry the line and column.
    pub fn from_toml(text: &str, origin: &str) -> Result<StudySpec> {
        let spec: StudySpec = crate::io::parse_toml(text, origin, "study TOML")?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<StudySpec> {
        let text = crate::io::read_to_string(path)?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The listed methods, unsized, with hyper-parameters an entry leaves out taken from `lora_scale` and
    /// `abba_scale`.
    pub fn templates(&self) -> Result<Vec<Method>> {
        let defaults = Defaults {
            lora_scale: Some(self.lora_scale),
            abba_scale: Some(self.abba_scale),
        };
        self.methods
            .iter()
            .map(|e| e.section().template(defaults))
            .collect()
    }

    pub fn rules(&self) -> Result<Vec<AbbaRankRule>> {
        self.abba_rules.iter().map(|r| r.parse()).collect()
    }

    /// The shape of generated targets; an error naming the fix when some target is generated and rows or cols
    /// is missing.
    pub fn generated_shape(&self) -> Result<(usize, usize)> {
        match (self.rows, self.cols) {
            (Some(m), Some(n)) => Ok((m, n)),
            _ => Err(AbbaError::InvalidArgument(
                "generated targets (and a generated w0) take their shape from the study: set rows = … and cols = …"
                    .into(),
            )),
        }
    }

    /// The targets one by one: each `delta` glob expanded to the tensors it selects.
    pub fn concrete_targets(&self) -> Result<Vec<TargetSpec>> {
        let mut out = Vec::new();
        for t in &self.targets {
            out.extend(t.expand()?);
        }
        Ok(out)
    }

    /// Refuses a shape whose matrices cannot fit in memory (target, W0, fit and residual: about
    /// [`MATRICES_PER_RUN`] f64 matrices of rows × cols per run), before anything is allocated or written.
    fn check_memory(rows: usize, cols: usize) -> Result<()> {
        let needed = MATRICES_PER_RUN as u128 * 8 * rows as u128 * cols as u128;
        match crate::process::available_memory_bytes() {
            Some(free) if needed > free as u128 => Err(AbbaError::InvalidArgument(format!(
                "rows × cols = {rows} × {cols} needs about {} ({MATRICES_PER_RUN} f64 matrices per run) but {} is \
                 available: use smaller rows and cols",
                human_bytes(needed),
                human_bytes(free as u128)
            ))),
            _ => Ok(()),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(AbbaError::InvalidArgument(m));
        if self.targets.is_empty() {
            return bad("the study lists no targets: add at least one [[targets]] table".into());
        }
        if self.solvers.is_empty() {
            return bad("the study lists no solvers: add at least one [[solvers]] table".into());
        }
        if self.ranks.is_empty() && self.params.is_empty() && self.chains.is_empty() {
            return bad(
                "the study gives no budget: set `ranks = [...]` or `params = [...]`".into(),
            );
        }
        if !self.ranks.is_empty() && !self.params.is_empty() {
            return bad("give either `ranks` or `params`, not both".into());
        }
        if self.seeds.is_empty() {
            return bad("`seeds` is empty: give at least one seed".into());
        }
        for entry in &self.solvers {
            let lr = match &entry.solver {
                SolverSpec::Adam(a) => Some(a.lr),
                SolverSpec::LoraPro(p) => Some(p.adam.lr),
                SolverSpec::Svd | SolverSpec::Als(_) => None,
            };
            if let Some(lr) = lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
                return bad(format!(
                    "the {} solver has lr = {lr}: a learning rate must be finite and > 0",
                    entry.solver.name()
                ));
            }
        }
        let targets = self.concrete_targets()?;
        let generated = targets.iter().any(|t| !t.is_loaded())
            || self.w0.as_ref().is_some_and(|w| !w.is_loaded());
        if generated {
            let (m, n) = self.generated_shape()?;
            Self::check_memory(m, n)?;
        }
        for t in &targets {
            if let Some((m, n)) = t.loaded_shape()? {
                Self::check_memory(m, n)?;
            }
        }
        self.rules()?;
        let templates = self.templates()?;
        for entry in &self.solvers {
            for kind in entry.methods.iter().flatten() {
                // A solver restricted to a family must fit at least one listed method of it.
                let listed: Vec<Method> = templates
                    .iter()
                    .filter(|t| t.kind() == *kind)
                    .cloned()
                    .collect();
                let supported = listed.iter().any(|m| entry.solver.supports(m))
                    || (listed.is_empty() && entry.solver.supports(&kind.template()));
                if !supported {
                    return bad(format!(
                        "the {} solver cannot fit {}: {}",
                        entry.solver.name(),
                        kind.name(),
                        match entry.solver {
                            SolverSpec::LoraPro(_) =>
                                "LoRA-Pro adjusts LoRA's gradients, so it takes lora or rslora",
                            SolverSpec::Svd => "closed forms exist for lora, full, krona and mora",
                            SolverSpec::Als(_) =>
                                "ALS fits lora, hira, abba, abba-chain, lokr, krona and kradapter",
                            SolverSpec::Adam(_) => "",
                        }
                    ));
                }
            }
        }
        let kinds: Vec<MethodKind> = self.templates()?.iter().map(Method::kind).collect();
        // HiRA and DoRA compute with W0; PiSSA, OLoRA and ABBA's Table 3 inits decompose it.
        let base_changing = |t: &Method| match t {
            Method::Lora(s) => s.init.changes_base(),
            Method::Abba(s) => s.init.changes_base(),
            _ => false,
        };
        let needs_w0 = kinds.contains(&MethodKind::Hira)
            || kinds.contains(&MethodKind::Dora)
            || templates.iter().any(base_changing)
            || self.targets.iter().any(TargetSpec::needs_w0)
            || (self.init == FitInit::Paper && kinds.contains(&MethodKind::Abba));
        if needs_w0 && self.w0.is_none() && !targets.iter().all(TargetSpec::has_own_w0) {
            return bad("HiRA, DoRA, PiSSA, OLoRA, hira-structured targets and the paper init need a W0: add `w0 = { kind = \"gaussian\" }` (delta targets bring their base tensor; a safetensors target can name one with w0 = \"<tensor>\")".into());
        }
        Ok(())
    }
}

/// Matrices of rows × cols a study run holds at once, roughly (target, W0, fit, residual).
pub const MATRICES_PER_RUN: usize = 4;

fn human_bytes(b: u128) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}
