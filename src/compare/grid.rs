//! The cells of a comparison: budgets × methods × lrs × seeds (full fine-tuning has no budget, so it is one
//! column of cells per lr × seed), each named by a readable prefix and a hash of everything that sets its numbers.

use serde::Serialize;

use super::spec::{CompareSpec, MethodEntry};
use crate::study::Shard;

/// One fine-tuning run of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Index into the spec's methods.
    pub method: usize,
    /// The LoRA rank whose parameter count is the budget; `None` for full fine-tuning.
    pub budget: Option<usize>,
    pub lr: f64,
    pub seed: u64,
}

/// What goes into a cell's hash: the cell and every shared setting of the spec that changes its numbers.
#[derive(Serialize)]
struct Identity<'a> {
    method: &'a crate::adapter::section::MethodSection,
    budget: Option<usize>,
    lr: f64,
    seed: u64,
    train: crate::finetune::train::TrainConfig,
    dropout: f32,
    targets: &'a Option<Vec<String>>,
    model: String,
    data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    toy: Option<String>,
    eval: String,
}

impl Cell {
    pub fn entry<'a>(&self, spec: &'a CompareSpec) -> &'a MethodEntry {
        &spec.methods[self.method]
    }

    /// `<label>-r<budget>-lr<lr>-s<seed>-<hash>`: readable, and distinct for any change of settings.
    pub fn id(&self, spec: &CompareSpec) -> String {
        let entry = self.entry(spec);
        let identity = Identity {
            method: &entry.method,
            budget: self.budget,
            lr: self.lr,
            seed: self.seed,
            train: entry.train_config(&spec.train),
            dropout: spec.adapter.dropout,
            targets: &spec.adapter.target_modules,
            model: spec
                .model
                .as_ref()
                .map_or(String::new(), |m| format!("{m:?}")),
            data: spec
                .data
                .as_ref()
                .map_or(String::new(), |d| format!("{d:?}")),
            toy: spec
                .toy
                .as_ref()
                .map(|t| format!("{} {}", t.display(), spec.toy_validation_fraction)),
            eval: format!("{:?}", spec.eval),
        };
        let json = serde_json::to_string(&identity).expect("a cell always serialises");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let budget = self.budget.map_or(String::new(), |b| format!("-r{b}"));
        format!(
            "{}{budget}-lr{:e}-s{}-{:08x}",
            entry.label,
            self.lr,
            self.seed,
            h >> 32
        )
    }
}

/// Every cell, in a fixed order: budgets, then methods, lrs and seeds (full fine-tuning's cells once, first).
pub fn expand(spec: &CompareSpec) -> Vec<Cell> {
    let mut cells = Vec::new();
    let mut push = |method: usize, budget: Option<usize>| {
        for &lr in &spec.methods[method].lrs {
            for &seed in &spec.seeds {
                cells.push(Cell {
                    method,
                    budget,
                    lr,
                    seed,
                });
            }
        }
    };
    for (i, m) in spec.methods.iter().enumerate() {
        if m.is_full() {
            push(i, None);
        }
    }
    for &b in &spec.budgets {
        for (i, m) in spec.methods.iter().enumerate() {
            if !m.is_full() {
                push(i, Some(b));
            }
        }
    }
    cells
}

/// This shard's cells: every n-th from k, as studies shard.
pub fn shard_cells(cells: Vec<Cell>, shard: Option<Shard>) -> Vec<Cell> {
    match shard {
        None => cells,
        Some(s) => cells
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % s.count == s.index)
            .map(|(_, c)| c)
            .collect(),
    }
}
