//! A comparison spec (`experiments/compare-*.toml`): a base model, data with three splits, shared training and
//! evaluation settings, and the grid — methods (each with its lr grid) × budgets (LoRA ranks) × seeds. Every
//! check runs before anything is written, and each failure is one line naming the problem and the fix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::adapter::section::MethodSection;
use crate::error::{AbbaError, Result};
use crate::finetune::data::{FieldNames, PromptStyle};
use crate::finetune::job::FinetuneSpec;
use crate::finetune::job::spec::EvalSection;
use crate::finetune::model::LlamaShape;
use crate::finetune::synthetic::SyntheticTask;
use crate::finetune::train::{OptimizerKind, TrainConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    /// The task's name: results go to `results/compare/<task>/` unless `out` says otherwise.
    pub task: String,
    pub out: Option<PathBuf>,
    /// The metric that chooses the lr (on validation) and is reported (on test).
    pub metric: Metric,
    /// Seeds: each one fixes a cell's adapter initialisation, data order and dropout stream, the same for every
    /// method, so results pair by seed.
    pub seeds: Vec<u64>,
    /// Budgets as LoRA ranks: every method is sized per layer to the parameters of a LoRA of that rank.
    pub budgets: Vec<usize>,
    /// The method every other one is paired against (a method label); `lora` by default.
    #[serde(default = "lora")]
    pub reference: String,
    /// An LLM task: the base model and data with three splits …
    pub model: Option<ModelSpec>,
    pub data: Option<DataSpec>,
    /// … or the MNIST toy (paper Fig. 1): its spec (`experiments/finetune-mnist.toml`) gives data, network and
    /// training; the grid sets method, budget (its `rank`), adaptation lr and seed.
    pub toy: Option<PathBuf>,
    /// The share of the toy's training images per class held out for validation.
    #[serde(default = "validation_fraction")]
    pub toy_validation_fraction: f64,
    #[serde(default)]
    pub adapter: LayerSpec,
    pub methods: Vec<MethodEntry>,
    /// Shared by every cell; `lr` comes from the grid (a `lr` here is refused).
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalSection,
}

fn validation_fraction() -> f64 {
    0.2
}

fn lora() -> String {
    "lora".into()
}

/// What is compared, and in which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Greedy-generation accuracy (the last number of the answer), higher is better.
    Accuracy,
    /// Exact match of the generated answer, higher is better.
    ExactMatch,
    /// Mean held-out loss on the answers, lower is better.
    Loss,
    /// exp(loss), lower is better.
    Perplexity,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::ExactMatch => "exact_match",
            Metric::Loss => "loss",
            Metric::Perplexity => "perplexity",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Accuracy | Metric::ExactMatch)
    }

    pub fn needs_generation(self) -> bool {
        self.higher_is_better()
    }
}

/// The base model: a Hugging Face directory, a fine-tuning job that pretrains one (run once, before the grid;
/// its `model/` is the base), or a random Llama (drawn from each cell's seed).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub path: Option<PathBuf>,
    pub pretrain: Option<PathBuf>,
    pub random: Option<LlamaShape>,
    #[serde(default = "auto")]
    pub tokenizer: String,
    #[serde(default = "f32")]
    pub dtype: String,
}

fn auto() -> String {
    "auto".into()
}
fn f32() -> String {
    "f32".into()
}

/// Three disjoint splits: JSONL files, or the built-in arithmetic problems drawn from three seed streams.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub train: Option<PathBuf>,
    pub validation: Option<PathBuf>,
    pub test: Option<PathBuf>,
    #[serde(default)]
    pub fields: FieldNames,
    pub synthetic: Option<SyntheticSplits>,
    #[serde(default = "max_len")]
    pub max_len: usize,
    /// Use at most this many training examples.
    pub limit: Option<usize>,
    /// `alpaca` (the default) or `plain`: the instruction and a newline, for small models.
    #[serde(default)]
    pub prompt: PromptStyle,
}

fn max_len() -> usize {
    256
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSplits {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    #[serde(default)]
    pub seed: u64,
    /// `word-problems` (the default), `addition` (`size` digits per addend) or `reverse` (words of 3 to `size`
    /// letters).
    #[serde(default)]
    pub task: SyntheticTask,
    #[serde(default = "size")]
    pub size: usize,
}

fn size() -> usize {
    3
}

/// The layer settings shared by every adapter (`[adapter]` minus the method).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    #[serde(default)]
    pub dropout: f32,
    pub target_modules: Option<Vec<String>>,
}

/// One `[[methods]]` entry: a method as in `[adapter]` (no sizes: the budget sets them), its lr grid and an
/// optional label (to compare two variants of one method).
#[derive(Clone, Debug)]
pub struct MethodEntry {
    pub label: String,
    pub method: MethodSection,
    pub lrs: Vec<f64>,
    /// This method's optimizer, in place of `[train] optimizer` (e.g. LoRA-Pro beside plain LoRA).
    pub optimizer: Option<OptimizerKind>,
}

impl MethodEntry {
    pub fn is_full(&self) -> bool {
        self.method.method == "full"
    }

    /// The shared training settings with this method's optimizer (the lr still comes from the grid).
    pub fn train_config(&self, shared: &TrainConfig) -> TrainConfig {
        let mut train = shared.clone();
        if let Some(o) = self.optimizer {
            train.optimizer = o;
        }
        train
    }
}

#[derive(Deserialize)]
struct EntryKeys {
    label: Option<String>,
    lrs: Vec<f64>,
    optimizer: Option<OptimizerKind>,
    #[serde(flatten)]
    method: toml::Table,
}

impl<'de> Deserialize<'de> for MethodEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let keys = EntryKeys::deserialize(d)?;
        let method = MethodSection::deserialize(toml::Value::Table(keys.method))
            .map_err(serde::de::Error::custom)?;
        Ok(MethodEntry {
            label: keys.label.unwrap_or_else(|| method.method.clone()),
            method,
            lrs: keys.lrs,
            optimizer: keys.optimizer,
        })
    }
}

fn bad<T>(message: String) -> Result<T> {
    Err(AbbaError::InvalidArgument(message))
}

impl CompareSpec {
    /// Reads and checks a spec; nothing is written.
    pub fn load(path: &Path) -> Result<CompareSpec> {
        let text = crate::io::read_to_string(path)?;
        Self::parse_from(&text, &path.display().to_string())
    }

    /// Parses and checks spec text (tests).
    pub fn parse(text: &str) -> Result<CompareSpec> {
        Self::parse_from(text, "<spec>")
    }

    fn parse_from(text: &str, origin: &str) -> Result<CompareSpec> {
        let spec: CompareSpec = crate::io::parse_toml(text, origin, "comparison TOML")?;
        // `[train] lr` would be silently replaced by each method's grid: refuse it, whatever its value.
        let raw: toml::Table = crate::io::parse_toml(text, origin, "comparison TOML")?;
        if raw
            .get("train")
            .and_then(|t| t.as_table())
            .is_some_and(|t| t.contains_key("lr"))
        {
            return bad(
                "[train] lr is set, but each method's lrs grid sets the learning rate: remove lr from [train]"
                    .into(),
            );
        }
        spec.validate()?;
        Ok(spec)
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("results/compare").join(&self.task))
    }

    /// Every check that does not need to run anything.
    pub fn validate(&self) -> Result<()> {
        if self.task.is_empty() || self.task.contains(['/', '\\']) {
            return bad(format!(
                "task '{}' must be a plain name (it names the results directory): use letters, digits, '-'",
                self.task
            ));
        }
        self.validate_grid()?;
        self.validate_methods()?;
        if let Some(toy) = &self.toy {
            return self.validate_toy(toy);
        }
        self.validate_model()?;
        self.validate_data()?;
        self.train.validate()?;
        if let Some(m) = self.methods.iter().find(|m| {
            m.train_config(&self.train).optimizer == OptimizerKind::LoraPro
                && !matches!(m.method.method.as_str(), "lora" | "rslora")
        }) {
            return bad(format!(
                "optimizer = \"lora-pro\" adjusts LoRA's gradients, but method '{}' is {}: give lora-pro only to lora or rslora entries (optimizer = \"lora-pro\" in that [[methods]] table), or use \"adamw\"",
                m.label, m.method.method
            ));
        }
        if self.eval.batch_size == 0 {
            return bad("[eval] batch_size = 0: use at least 1".into());
        }
        if self.metric.needs_generation() && self.eval.generate == 0 {
            return bad(format!(
                "metric = \"{}\" is scored by generation but [eval] generate = 0: set generate to the number of \
                 validation/test examples to score",
                self.metric.name()
            ));
        }
        Ok(())
    }

    fn validate_grid(&self) -> Result<()> {
        if self.seeds.len() < 2 {
            return bad(format!(
                "{} seed(s): an interval over seeds needs at least 2 (3 or more recommended), e.g. seeds = [0, 1, 2]",
                self.seeds.len()
            ));
        }
        if let Some(s) = duplicate(&self.seeds) {
            return bad(format!("seed {s} is listed twice in seeds: list each once"));
        }
        if self.budgets.is_empty() {
            return bad("budgets is empty: list LoRA ranks, e.g. budgets = [4, 8]".into());
        }
        if self.budgets.contains(&0) {
            return bad("budget 0 in budgets: budgets are LoRA ranks ≥ 1".into());
        }
        if let Some(b) = duplicate(&self.budgets) {
            return bad(format!(
                "budget {b} is listed twice in budgets: list each once"
            ));
        }
        Ok(())
    }

    fn validate_methods(&self) -> Result<()> {
        if self.methods.is_empty() {
            return bad(
                "no [[methods]]: add at least one, e.g. method = \"lora\" with lrs = [1e-3]".into(),
            );
        }
        let labels: Vec<&str> = self.methods.iter().map(|m| m.label.as_str()).collect();
        if let Some(l) = duplicate(&labels) {
            return bad(format!(
                "method label '{l}' is used twice: give one of them label = \"…\""
            ));
        }
        let trials = self.methods[0].lrs.len();
        for m in &self.methods {
            let name = &m.label;
            if m.lrs.is_empty() {
                return bad(format!(
                    "method '{name}' has an empty lrs grid: give at least one learning rate"
                ));
            }
            if let Some(lr) = m.lrs.iter().find(|lr| !(lr.is_finite() && **lr > 0.0)) {
                return bad(format!(
                    "method '{name}' has learning rate {lr} in lrs: every learning rate must be finite and > 0"
                ));
            }
            if let Some(lr) = duplicate_f64(&m.lrs) {
                return bad(format!(
                    "method '{name}' lists lr {lr} twice: list each once"
                ));
            }
            if m.lrs.len() != trials {
                return bad(format!(
                    "method '{name}' has {} learning rates but '{}' has {trials}: every method gets the same number \
                     of trials, so give each lrs grid {trials} values",
                    m.lrs.len(),
                    self.methods[0].label
                ));
            }
            let s = &m.method;
            if s.r.is_some()
                || s.r1.is_some()
                || s.r2.is_some()
                || s.ranks.is_some()
                || s.r_hat.is_some()
            {
                return bad(format!(
                    "method '{name}' gives its own sizes (r, r1, r2, ranks or r_hat): budgets size every method, so \
                     remove them"
                ));
            }
            if m.is_full() {
                continue;
            }
            m.method
                .template(crate::adapter::section::Defaults::FINETUNE)?;
        }
        if !labels.contains(&self.reference.as_str()) {
            return bad(format!(
                "reference '{}' is not one of the methods ({}): add it or set reference to one of them",
                self.reference,
                labels.join(", ")
            ));
        }
        Ok(())
    }

    fn validate_toy(&self, toy: &Path) -> Result<()> {
        if let Some(m) = self.methods.iter().find(|m| m.optimizer.is_some()) {
            return bad(format!(
                "method '{}' sets optimizer, but the MNIST toy trains every method with AdamW: remove optimizer (it applies to LLM tasks)",
                m.label
            ));
        }
        if self.model.is_some() || self.data.is_some() {
            return bad(
                "the spec names a toy and [model]/[data]: a comparison is either the MNIST toy or an LLM task, remove one"
                    .into(),
            );
        }
        crate::finetune::toy::load_spec(toy)?;
        if !matches!(self.metric, Metric::Accuracy | Metric::Loss) {
            return bad(format!(
                "metric = \"{}\" is not measured by the MNIST toy: use \"accuracy\" (on 8–9) or \"loss\"",
                self.metric.name()
            ));
        }
        if !(self.toy_validation_fraction > 0.0 && self.toy_validation_fraction < 1.0) {
            return bad(format!(
                "toy_validation_fraction = {}: use a share in (0, 1), e.g. 0.2",
                self.toy_validation_fraction
            ));
        }
        Ok(())
    }

    fn validate_model(&self) -> Result<()> {
        let Some(m) = &self.model else {
            return bad(
                "the spec needs [model] and [data] (an LLM task) or toy = \"<toy TOML>\"".into(),
            );
        };
        let given = [m.path.is_some(), m.pretrain.is_some(), m.random.is_some()];
        if given.iter().filter(|&&g| g).count() != 1 {
            return bad(
                "[model] needs exactly one of path = \"<HF model dir>\", pretrain = \"<fine-tuning TOML>\" or a \
                 [model.random] shape"
                    .into(),
            );
        }
        if let Some(job) = &m.pretrain {
            FinetuneSpec::load(job)?;
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<()> {
        let Some(d) = &self.data else {
            return bad("the spec needs [data] with three splits (train, validation, test)".into());
        };
        let files = [&d.train, &d.validation, &d.test];
        let n_files = files.iter().filter(|f| f.is_some()).count();
        match (&d.synthetic, n_files) {
            (Some(s), 0) => {
                crate::finetune::synthetic::validate(s.task, s.size)?;
                if s.train == 0 || s.validation == 0 || s.test == 0 {
                    return bad(format!(
                        "[data.synthetic] has train = {}, validation = {}, test = {}: each split needs at least 1 \
                         example",
                        s.train, s.validation, s.test
                    ));
                }
            }
            (None, 3) => {
                for f in files.into_iter().flatten() {
                    if !f.is_file() {
                        return bad(format!(
                            "[data] file {} does not exist: fix the path (relative to the working directory)",
                            f.display()
                        ));
                    }
                }
            }
            _ => {
                return bad(
                    "[data] needs train, validation and test JSONL files, or [data.synthetic] with train, validation \
                     and test counts"
                        .into(),
                );
            }
        }
        if d.max_len < 2 {
            return bad(format!("[data] max_len = {}: use at least 2", d.max_len));
        }
        Ok(())
    }
}

fn duplicate<T: PartialEq + Copy>(xs: &[T]) -> Option<T> {
    xs.iter()
        .enumerate()
        .find(|(i, x)| xs[..*i].contains(x))
        .map(|(_, x)| *x)
}

fn duplicate_f64(xs: &[f64]) -> Option<f64> {
    xs.iter()
        .enumerate()
        .find(|(i, x)| xs[..*i].iter().any(|y| y == *x))
        .map(|(_, x)| *x)
}
