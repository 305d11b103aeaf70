//! Running one configuration: build (or reuse) its target, initialise, fit, measure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ndarray::Array2;

use super::grid::RunConfig;
use super::record::{CurvePoint, RunRecord, SpectrumPoint, Status};
use super::spec::Dtype;
use crate::adapter::Method;
use crate::error::{AbbaError, Result};
use crate::fit::{FitOutcome, Fitted, SolverSpec, Stop, adam, als, lora_pro, oracle, start};
use crate::linalg::{Real, Svd, frob2, svd_thin};
use crate::metrics::{FitMetrics, evaluate};
use crate::process::RunPeak;
use crate::rng::{derive, seeded};

/// A target with what every fit of it needs: its SVD, its norm and the study's W0.
pub struct PreparedTarget {
    pub t: Array2<f64>,
    pub svd: Svd<f64>,
    pub norm2: f64,
    pub w0: Option<Array2<f64>>,
}

type Slot = Arc<OnceLock<std::result::Result<Arc<PreparedTarget>, AbbaError>>>;

/// Builds each (target, shape, W0, seed) once, however many runs and threads ask for it.
#[derive(Default)]
pub struct TargetCache {
    slots: Mutex<HashMap<String, Slot>>,
}

impl TargetCache {
    pub fn get(&self, c: &RunConfig) -> Result<Arc<PreparedTarget>> {
        let key = serde_json::to_string(&(&c.target, c.rows, c.cols, &c.w0, c.seed))
            .expect("serialisable");
        let slot = self
            .slots
            .lock()
            .expect("cache lock")
            .entry(key)
            .or_default()
            .clone();
        slot.get_or_init(|| prepare(c).map(Arc::new)).clone()
    }
}

fn prepare(c: &RunConfig) -> Result<PreparedTarget> {
    let shape = (c.rows, c.cols);
    let w0 = match c.target.own_w0()? {
        Some(w0) => Some(w0),
        None => {
            c.w0.as_ref()
                .map(|spec| spec.build(shape, derive(c.seed, 2), None))
                .transpose()?
        }
    };
    let t = c.target.build(shape, derive(c.seed, 1), w0.as_ref())?;
    let svd = svd_thin(t.view())?;
    let norm2 = frob2(t.view());
    if norm2 == 0.0 {
        return Err(AbbaError::InvalidArgument(format!(
            "target {} is all zeros: nothing to fit",
            c.target.name()
        )));
    }
    Ok(PreparedTarget { t, svd, norm2, w0 })
}

/// What one run produced.
pub struct RunOutput {
    pub record: RunRecord,
    pub curve: Vec<CurvePoint>,
    pub spectrum: Vec<SpectrumPoint>,
}

impl RunOutput {
    /// This run's results under `c`, a configuration with the same [`RunConfig::fit_key`]: only the labels (run
    /// id, rule, budget, config) change. Its time and memory are those of the fit it shares.
    pub fn relabelled(&self, c: &RunConfig) -> RunOutput {
        let mut record = self.record.clone();
        record.run_id = c.id();
        record.rule = c.rule.clone().unwrap_or_default();
        record.budget_rank = c.budget_rank;
        record.config = c.json();
        RunOutput {
            record,
            curve: self.curve.clone(),
            spectrum: self.spectrum.clone(),
        }
    }
}

/// A method whose initialisation changes the base (PiSSA, OLoRA, most of ABBA's Table 3 inits) reaches
/// ΔW(θ) − ΔW(θ₀) relative to the original W0: it is fitted to the shifted target T + ΔW(θ₀), from θ₀, and its
/// update is reported relative to W0. Returns ΔW(θ₀) and the starting adapter, or None for the other methods.
fn anchor<T: Real>(c: &RunConfig, p: &PreparedTarget) -> Result<Option<(Array2<f64>, Fitted<T>)>> {
    let base_changing = match &c.method {
        Method::Lora(s) => s.init.changes_base(),
        Method::Abba(s) => s.init.changes_base(),
        _ => false,
    };
    if !base_changing {
        return Ok(None);
    }
    let w0 = p.w0.as_ref().ok_or_else(|| {
        AbbaError::InvalidArgument(format!(
            "{} starts from W0's decomposition and needs a W0: add `w0 = {{ kind = \"gaussian\" }}` to the study",
            c.method.name()
        ))
    })?;
    let init = c
        .method
        .init::<T, _>(w0.mapv(T::of).view(), &mut seeded(derive(c.seed, 3)))?;
    let origin = init.adapter.as_adapter().delta().mapv(|x| x.f64());
    Ok(Some((origin, init.adapter)))
}

fn fit<T: Real>(c: &RunConfig, p: &PreparedTarget) -> Result<(Array2<f64>, FitOutcome)> {
    let mut rng = seeded(derive(c.seed, 3));
    let anchored = anchor::<T>(c, p)?;
    let shifted = anchored.as_ref().map(|(origin, _)| &p.t + origin);
    let goal = shifted.as_ref().unwrap_or(&p.t);
    let target: Array2<T> = goal.mapv(T::of);
    let relative = |f: &Fitted<T>| {
        let d = f.as_adapter().delta().mapv(|x| x.f64());
        match &anchored {
            Some((origin, _)) => d - origin,
            None => d,
        }
    };
    let exact = |f: Fitted<T>| {
        let delta = relative(&f);
        let objective = crate::metrics::normalised_error(p.t.view(), delta.view());
        let curve = vec![CurvePoint {
            step: 0,
            seconds: 0.0,
            objective,
        }];
        (
            delta,
            FitOutcome {
                stop: Stop::Exact,
                steps: 0,
                curve,
                reason: String::new(),
            },
        )
    };
    let start = |rng: &mut _| match &anchored {
        Some((_, adapter)) => Ok(adapter.clone()),
        None => start::initialise::<T, _>(&c.method, &p.svd, p.w0.as_ref(), &c.init, rng),
    };
    let (fitted, outcome) = match (&c.solver, &c.method) {
        (SolverSpec::Svd, Method::Lora(l)) => {
            let svd = match &shifted {
                Some(t) => &crate::linalg::svd_thin(t.view())?,
                None => &p.svd,
            };
            return Ok(exact(oracle::lora_from_svd(svd, l.r)?));
        }
        (SolverSpec::Svd, Method::Full) => return Ok(exact(oracle::full(&p.t)?)),
        (SolverSpec::Svd, Method::Lokr(s)) if s.krona => {
            return Ok(exact(oracle::krona(target.view(), s)?));
        }
        (SolverSpec::Svd, Method::Mora(s)) => return Ok(exact(oracle::mora(target.view(), s)?)),
        (SolverSpec::Svd, m) => {
            return Err(AbbaError::InvalidArgument(format!(
                "the svd solver has no closed form for {}",
                m.label()
            )));
        }
        (SolverSpec::Als(spec), _) => {
            let mut f = start(&mut rng)?;
            let outcome = als::run(&mut f, target.view(), p.norm2, spec)?;
            (f, outcome)
        }
        (SolverSpec::Adam(spec), _) => {
            let mut f = start(&mut rng)?;
            let outcome = adam::run(&mut f, target.view(), p.norm2, spec);
            (f, outcome)
        }
        (SolverSpec::LoraPro(spec), Method::Lora(_)) => match start(&mut rng)? {
            Fitted::Lora(mut lora) => {
                let outcome = lora_pro::run(&mut lora, target.view(), p.norm2, spec)?;
                (Fitted::Lora(lora), outcome)
            }
            _ => unreachable!("a LoRA method starts as a LoRA"),
        },
        (SolverSpec::LoraPro(_), m) => {
            return Err(AbbaError::InvalidArgument(format!(
                "LoRA-Pro adjusts LoRA's gradients: it fits lora or rslora, not {}",
                m.label()
            )));
        }
    };
    Ok((relative(&fitted), outcome))
}

/// Runs one configuration. Never panics outward and never returns an error: failures become records.
pub fn run_one(study: &str, c: &RunConfig, cache: &TargetCache) -> RunOutput {
    let started = Instant::now();
    let memory = RunPeak::start();
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<_> {
        if let Some(reason) = &c.unreachable {
            return Err(AbbaError::InvalidArgument(reason.clone()));
        }
        let p = cache.get(c)?;
        let (delta, outcome) = match c.dtype {
            Dtype::F32 => fit::<f32>(c, &p)?,
            Dtype::F64 => fit::<f64>(c, &p)?,
        };
        let metrics = if outcome.stop == Stop::Diverged {
            None
        } else {
            Some(evaluate(
                p.t.view(),
                &p.svd.s,
                delta.view(),
                c.dtype.epsilon(),
            )?)
        };
        Ok((p, outcome, metrics))
    }));
    let wall_s = started.elapsed().as_secs_f64();
    let mut record = blank_record(study, c);
    record.wall_s = wall_s;
    // Per-run when this run had the process to itself, else an upper bound shared with the runs that overlapped
    // it (docs/records.md).
    record.peak_rss_mb = memory.read().0;
    drop(memory);
    let (curve, spectrum) = match attempt {
        Ok(Ok((p, outcome, metrics))) => {
            record.steps = outcome.steps;
            match metrics {
                Some(m) => {
                    record.status = Status::Ok;
                    fill_metrics(&mut record, &m);
                    let spectrum = p
                        .svd
                        .s
                        .iter()
                        .zip(m.fit_spectrum.iter())
                        .enumerate()
                        .map(|(index, (&target, &fit))| SpectrumPoint { index, target, fit })
                        .collect();
                    (outcome.curve, spectrum)
                }
                None => {
                    record.status = Status::Diverged;
                    record.reason = outcome.reason;
                    (outcome.curve, Vec::new())
                }
            }
        }
        Ok(Err(e)) => {
            record.status = Status::Failed;
            record.reason = e.to_string();
            (Vec::new(), Vec::new())
        }
        Err(panic) => {
            record.status = Status::Failed;
            record.reason = format!(
                "internal error (please report): {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            );
            (Vec::new(), Vec::new())
        }
    };
    RunOutput {
        record,
        curve,
        spectrum,
    }
}

fn fill_metrics(r: &mut RunRecord, m: &FitMetrics) {
    r.error = m.error;
    r.rel_frob = m.rel_frob;
    r.sv_error = m.sv_error;
    r.stable_rank = m.stable_rank;
    r.effective_rank = m.effective_rank;
    r.numerical_rank = m.numerical_rank;
}

fn blank_record(study: &str, c: &RunConfig) -> RunRecord {
    let ranks = c.method.ranks();
    let (r1, r2) = (
        ranks.first().copied().unwrap_or(0),
        ranks.get(1).copied().unwrap_or(0),
    );
    let (scale_convention, scale) = match &c.method {
        Method::Abba(s) => (s.scale.name().to_string(), s.scale.value(s.r1, s.r2)),
        Method::AbbaChain(s) => (s.scale.name().to_string(), s.scale.value_for(&s.ranks)),
        Method::Lora(s) => (s.scale.name().to_string(), s.scale.value(s.r)),
        Method::Dora(s) => (s.scale.name().to_string(), s.scale.value(s.r)),
        Method::Lokr(s) if s.krona => ("explicit".into(), s.scale()),
        Method::Lokr(s) => ("alpha/r".into(), s.scale()),
        Method::Kradapter(s) => ("explicit".into(), s.scale),
        Method::Full | Method::Hira(_) | Method::Mora(_) => (String::new(), 1.0),
    };
    RunRecord {
        run_id: c.id(),
        study: study.to_string(),
        target: c.target.name(),
        rows: c.rows,
        cols: c.cols,
        method: c.method.record_name().to_string(),
        rule: c.rule.clone().unwrap_or_default(),
        budget_rank: c.budget_rank,
        r1,
        r2,
        params: c.method.num_params((c.rows, c.cols)),
        solver: c.solver.name().to_string(),
        init: c.init.name(),
        seed: c.seed,
        dtype: c.dtype.name().to_string(),
        scale_convention,
        scale,
        status: Status::Failed,
        reason: String::new(),
        error: f64::NAN,
        rel_frob: f64::NAN,
        sv_error: f64::NAN,
        stable_rank: f64::NAN,
        effective_rank: f64::NAN,
        numerical_rank: 0,
        steps: 0,
        wall_s: 0.0,
        peak_rss_mb: 0.0,
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("ABBA_GIT_COMMIT").to_string(),
        config: c.json(),
    }
}
