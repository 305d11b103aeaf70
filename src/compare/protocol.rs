//! The protocol: for each method and budget the lr is chosen on the validation metric alone (mean over seeds;
//! an lr where any seed failed or diverged ranks below every lr where none did; ties go to the smaller lr), and
//! the reported number is the test metric at that lr — mean, sd and a 95 % Student-t interval over seeds — with
//! per-seed paired differences against the reference method (LoRA) at the same budget and a paired t-test.

use std::collections::BTreeMap;

use super::record::{CellRecord, CellStatus};
use crate::stats::{Interval, PairedTest, paired_t_test, t_interval};

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// One lr of one method × budget, as validation sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    pub lr: f64,
    /// Validation metric per seed (NaN where the cell failed or diverged).
    pub validation: Vec<(u64, f64)>,
}

impl Trial {
    fn complete(&self) -> bool {
        !self.validation.is_empty() && self.validation.iter().all(|(_, v)| v.is_finite())
    }

    pub fn mean(&self) -> f64 {
        let vs: Vec<f64> = self.validation.iter().map(|(_, v)| *v).collect();
        crate::stats::mean(&vs)
    }
}

/// The index of the chosen trial: this function sees validation metrics only, so the test split cannot choose.
pub fn choose_lr(trials: &[Trial], higher_is_better: bool) -> Option<usize> {
    let better = |a: &Trial, b: &Trial| -> bool {
        match (a.complete(), b.complete()) {
            (true, false) => return true,
            (false, true) => return false,
            _ => {}
        }
        let (x, y) = (a.mean(), b.mean());
        if !x.is_finite() {
            return false;
        }
        if !y.is_finite() {
            return true;
        }
        if x == y {
            return a.lr < b.lr;
        }
        if higher_is_better { x > y } else { x < y }
    };
    let mut best: Option<usize> = None;
    for (i, t) in trials.iter().enumerate() {
        if best.is_none_or(|b| better(t, &trials[b])) {
            best = Some(i);
        }
    }
    best.filter(|&i| trials[i].mean().is_finite())
}

/// A method at a budget (`budget_rank` 0: full fine-tuning), after selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Selected {
    pub method: String,
    pub kind: String,
    pub budget_rank: usize,
    pub params: usize,
    pub trials: Vec<Trial>,
    /// The chosen lr (None when no lr gave a finite validation metric).
    pub lr: Option<f64>,
    /// Test metric per seed at the chosen lr (ok cells only).
    pub test: Vec<(u64, f64)>,
    pub interval: Option<Interval>,
}

/// A method's paired difference from the reference at one budget: method − reference, seed by seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Paired {
    pub method: String,
    pub budget_rank: usize,
    pub seeds: usize,
    pub test: PairedTest,
}

/// Selection for every method × budget of `records` (one task), in the order the records first name them.
pub fn select(records: &[CellRecord]) -> Vec<Selected> {
    let higher = records.first().is_some_and(|r| r.higher_is_better);
    let mut groups: Vec<((String, usize), Vec<&CellRecord>)> = Vec::new();
    for r in records {
        let key = (r.method.clone(), r.budget_rank);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rows)) => rows.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|((method, budget_rank), rows)| {
            let mut by_lr: BTreeMap<u64, Trial> = BTreeMap::new();
            for r in &rows {
                let value = if r.status == CellStatus::Ok {
                    r.validation
                } else {
                    f64::NAN
                };
                by_lr
                    .entry(r.lr.to_bits())
                    .or_insert_with(|| Trial {
                        lr: r.lr,
                        validation: Vec::new(),
                    })
                    .validation
                    .push((r.seed, value));
            }
            let mut trials: Vec<Trial> = by_lr.into_values().collect();
            trials.sort_by(|a, b| a.lr.total_cmp(&b.lr));
            for t in &mut trials {
                t.validation.sort_by_key(|(s, _)| *s);
            }
            let chosen = choose_lr(&trials, higher).map(|i| trials[i].lr);
            let mut test: Vec<(u64, f64)> = rows
                .iter()
                .filter(|r| {
                    Some(r.lr) == chosen && r.status == CellStatus::Ok && r.test.is_finite()
                })
                .map(|r| (r.seed, r.test))
                .collect();
            test.sort_by_key(|(s, _)| *s);
            let values: Vec<f64> = test.iter().map(|(_, v)| *v).collect();
            Selected {
                kind: rows[0].kind.clone(),
                params: rows.iter().map(|r| r.params).max().unwrap_or(0),
                method,
                budget_rank,
                trials,
                lr: chosen,
                interval: (!values.is_empty()).then(|| t_interval(&values, LEVEL)),
                test,
            }
        })
        .collect()
}

/// Paired differences against `reference` at each budget; full fine-tuning (budget 0) is paired with the
/// reference at every budget. Only seeds both sides have are paired.
pub fn paired(selected: &[Selected], reference: &str) -> Vec<Paired> {
    let mut out = Vec::new();
    for r in selected.iter().filter(|s| s.method == reference) {
        for s in selected.iter().filter(|s| {
            s.method != reference && (s.budget_rank == r.budget_rank || s.budget_rank == 0)
        }) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (seed, v) in &s.test {
                if let Some((_, w)) = r.test.iter().find(|(t, _)| t == seed) {
                    a.push(*v);
                    b.push(*w);
                }
            }
            out.push(Paired {
                method: s.method.clone(),
                budget_rank: r.budget_rank,
                seeds: a.len(),
                test: paired_t_test(&a, &b, LEVEL),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, lr: f64, seed: u64, validation: f64, test: f64) -> CellRecord {
        CellRecord {
            cell_id: format!("{method}-{lr}-{seed}"),
            method: method.into(),
            kind: method.into(),
            budget_rank: 4,
            lr,
            seed,
            status: CellStatus::Ok,
            higher_is_better: true,
            validation,
            test,
            ..CellRecord::default()
        }
    }

    #[test]
    fn lr_is_chosen_on_validation_even_where_test_disagrees() {
        // lr 1e-3 wins on validation; lr 1e-2 would win on test by a wide margin.
        let mut rows = Vec::new();
        for seed in 0..3 {
            rows.push(row("lora", 1e-3, seed, 0.8, 0.1));
            rows.push(row("lora", 1e-2, seed, 0.5, 0.9));
        }
        let s = select(&rows);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].lr, Some(1e-3));
        assert!(s[0].test.iter().all(|(_, v)| *v == 0.1));
        // Lower is better flips it.
        for r in &mut rows {
            r.higher_is_better = false;
        }
        assert_eq!(select(&rows)[0].lr, Some(1e-2));
    }

    #[test]
    fn an_lr_with_a_diverged_seed_ranks_below_complete_ones() {
        let mut rows = vec![
            row("abba", 1e-2, 0, 0.99, 0.99),
            row("abba", 1e-2, 1, 0.99, 0.99),
            row("abba", 1e-3, 0, 0.5, 0.5),
            row("abba", 1e-3, 1, 0.5, 0.5),
        ];
        rows[1].status = CellStatus::Diverged;
        assert_eq!(select(&rows)[0].lr, Some(1e-3));
    }

    #[test]
    fn paired_differences_pair_by_seed() {
        let mut rows = Vec::new();
        for (seed, (a, b)) in [(0.5, 0.4), (0.6, 0.4), (0.7, 0.4)].into_iter().enumerate() {
            rows.push(row("abba", 1e-3, seed as u64, 1.0, a));
            rows.push(row("lora", 1e-3, seed as u64, 1.0, b));
        }
        let sel = select(&rows);
        let p = paired(&sel, "lora");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].seeds, 3);
        // Differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 2√3.
        assert!((p[0].test.diff.mean - 0.2).abs() < 1e-12);
        assert!((p[0].test.t - 2.0 * 3f64.sqrt()).abs() < 1e-9);
    }
}
