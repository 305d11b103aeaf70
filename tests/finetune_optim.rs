//! AdamW, clipping, schedules and gradient accumulation against independent references:
//! a torch / transformers trajectory (tests/fixtures/optim/make_optim_fixture.py) and candle's own backward.

use std::collections::HashMap;

use abba::error::AbbaError;
use abba::finetune::optim::{
    AdamW, AdamWConfig, GradAccumulator, Schedule, clip_grad_norm, lr_at, warmup_steps_from_ratio,
};
use candle_core::{DType, Device, Tensor, Var};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/optim/optim.safetensors"
);

fn fixture() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(FIXTURE, &Device::Cpu).expect("fixture loads")
}

fn get(f: &HashMap<String, Tensor>, key: &str) -> Tensor {
    f.get(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"))
        .clone()
}

fn flat_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest |a − b| / max(|b|, 1e-3): relative for ordinary values without blowing up near zero.
fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    flat_f32(a)
        .iter()
        .zip(flat_f32(b))
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0.0, f32::max)
}

#[test]
fn adamw_with_clipping_follows_torch_trajectory() {
    let f = fixture();
    let lrs: Vec<f64> = get(&f, "lr").to_vec1().unwrap();
    let norms: Vec<f64> = get(&f, "norm").to_vec1().unwrap();
    let clipped: Vec<i64> = get(&f, "clipped").to_vec1().unwrap();
    let vars: Vec<Var> = (0..2)
        .map(|j| Var::from_tensor(&get(&f, &format!("init.{j}"))).unwrap())
        .collect();
    let config = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(vars.clone(), config).unwrap();
    let mut worst = 0.0f32;
    for (t, &lr) in lrs.iter().enumerate() {
        let mut grads: Vec<Tensor> = (0..2).map(|j| get(&f, &format!("grad.{t}.{j}"))).collect();
        let before = grads.clone();
        let norm = clip_grad_norm(&mut grads, 2.0).unwrap();
        assert!(
            (norm - norms[t]).abs() <= 1e-6 * norms[t],
            "step {t}: norm {norm} vs torch {}",
            norms[t]
        );
        // Clipping happens exactly where torch clipped, and leaves the other steps' gradients untouched.
        let changed = before
            .iter()
            .zip(&grads)
            .any(|(a, b)| flat_f32(a) != flat_f32(b));
        assert_eq!(changed, clipped[t] == 1, "step {t}: clipping decision");
        opt.step(&grads, lr).unwrap();
        for (j, var) in vars.iter().enumerate() {
            let d = max_rel_diff(var.as_tensor(), &get(&f, &format!("param.{t}.{j}")));
            assert!(d <= 1e-6, "step {t} param {j}: relative difference {d}");
            worst = worst.max(d);
        }
    }
    assert_eq!(opt.step_count(), lrs.len());
    assert!(clipped.contains(&1) && clipped.contains(&0));
    eprintln!("worst relative difference to torch over the trajectory: {worst:e}");
}

#[test]
fn schedules_match_hf_multipliers() {
    let f = fixture();
    let mut checked = 0;
    for schedule in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
        for (total, warmup) in [(50usize, 5usize), (10, 0), (4, 6)] {
            let key = format!("sched.{schedule}.{total}.{warmup}");
            let hf: Vec<f64> = get(&f, &key).to_vec1().unwrap();
            assert_eq!(hf.len(), total + 10, "{key} runs past the end");
            for (step, &want) in hf.iter().enumerate() {
                let got = lr_at(schedule, 1.0, step, total, warmup);
                assert!(
                    (got - want).abs() <= 1e-12,
                    "{key} step {step}: {got} vs HF {want}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * (60 + 20 + 14));
    // The base lr scales the multiplier.
    assert_eq!(lr_at(Schedule::Constant, 2e-4, 100, 50, 5), 2e-4);
    assert!((lr_at(Schedule::Linear, 2e-4, 1, 50, 5) - 2e-4 * 0.2).abs() < 1e-20);
}

#[test]
fn warmup_steps_match_hf_rounding() {
    let f = fixture();
    let ratios: Vec<f64> = get(&f, "warmup.ratio").to_vec1().unwrap();
    let totals: Vec<i64> = get(&f, "warmup.total").to_vec1().unwrap();
    let steps: Vec<i64> = get(&f, "warmup.steps").to_vec1().unwrap();
    for ((&r, &n), &want) in ratios.iter().zip(&totals).zip(&steps) {
        let got = warmup_steps_from_ratio(r, n as usize).unwrap();
        assert_eq!(got as i64, want, "ratio {r} of {n} steps");
    }
    // HF's float product: 0.07 · 100 = 7.000000000000001, so 8 warmup steps.
    assert_eq!(warmup_steps_from_ratio(0.07, 100).unwrap(), 8);
    assert_eq!(warmup_steps_from_ratio(1.0, 100).unwrap(), 100);
    for bad in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            warmup_steps_from_ratio(bad, 10),
            Err(AbbaError::InvalidArgument(_))
        ));
    }
}

#[test]
fn schedule_names_parse_and_serialize() {
    for s in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
        assert_eq!(s.to_string().parse::<Schedule>().unwrap(), s);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
    }
    assert_eq!(" Cosine ".parse::<Schedule>().unwrap(), Schedule::Cosine);
    let err = "cosine_with_restarts".parse::<Schedule>().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("constant, linear, cosine") && !msg.contains('\n'),
        "{msg}"
    );
    assert!(serde_json::from_str::<Schedule>("\"step\"").is_err());
}

#[test]
fn adamw_config_defaults_and_deserialization() {
    let d = AdamWConfig::default();
    assert_eq!(
        (d.lr, d.beta1, d.beta2, d.eps, d.weight_decay),
        (1e-3, 0.9, 0.999, 1e-8, 0.0)
    );
    let c: AdamWConfig = serde_json::from_str(r#"{"lr": 2e-4, "weight_decay": 0.01}"#).unwrap();
    assert_eq!(
        c,
        AdamWConfig {
            lr: 2e-4,
            weight_decay: 0.01,
            ..d
        }
    );
    assert!(serde_json::from_str::<AdamWConfig>(r#"{"betas": [0.9, 0.99]}"#).is_err());
    let bad = AdamWConfig { beta2: 1.0, ..d };
    let var = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let err = AdamW::new(vec![var], bad)
        .err()
        .expect("beta2 = 1 is refused");
    assert!(err.to_string().contains("beta2"), "{err}");
}

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic, dependency-free values in roughly [-1, 1].
    let n: usize = shape.iter().product();
    let vals: Vec<f32> = (0..n)
        .map(|i| {
            let x = (i as u64 + 1)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(seed.wrapping_mul(1442695040888963407));
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(vals, shape, &Device::Cpu).unwrap()
}

#[test]
fn accumulated_gradients_equal_one_pass_of_the_summed_loss() {
    let w = Var::from_tensor(&seeded(&[3, 2], 1)).unwrap();
    let b = Var::from_tensor(&seeded(&[2], 2)).unwrap();
    let unused = Var::from_tensor(&seeded(&[4], 3)).unwrap();
    let batches: Vec<(Tensor, Tensor)> = (0..3)
        .map(|k| (seeded(&[5, 3], 10 + k), seeded(&[5, 2], 20 + k)))
        .collect();
    let k = batches.len() as f64;
    // Quadratic loss per micro-batch, divided by the count as the caller does; b only enters batches 0 and 2.
    let loss = |k_idx: usize, (x, y): &(Tensor, Tensor)| -> Tensor {
        let mut pred = x.matmul(w.as_tensor()).unwrap();
        if k_idx != 1 {
            pred = pred.broadcast_add(b.as_tensor()).unwrap();
        }
        ((pred - y).unwrap().sqr().unwrap().sum_all().unwrap() / k).unwrap()
    };
    let vars = [w.clone(), b.clone(), unused.clone()];
    let mut acc = GradAccumulator::new(&vars);
    for (i, batch) in batches.iter().enumerate() {
        acc.add(&loss(i, batch).backward().unwrap()).unwrap();
    }
    assert_eq!(acc.micro_batches(), 3);
    let summed = acc.take().unwrap();
    assert_eq!(acc.micro_batches(), 0);

    let total = batches
        .iter()
        .enumerate()
        .map(|(i, batch)| loss(i, batch))
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    let reference = total.backward().unwrap();
    for (var, got) in vars[..2].iter().zip(&summed) {
        let want = reference.get(var.as_tensor()).unwrap();
        let d = max_rel_diff(got, want);
        assert!(d <= 1e-5, "accumulated gradient differs by {d}");
    }
    assert_eq!(summed[2].dims(), &[4]);
    assert!(flat_f32(&summed[2]).iter().all(|&x| x == 0.0));

    // After take, a new accumulation starts from zero.
    acc.add(&loss(0, &batches[0]).backward().unwrap()).unwrap();
    let again = acc.take().unwrap();
    let single = loss(0, &batches[0]).backward().unwrap();
    assert_eq!(
        flat_f32(&again[0]),
        flat_f32(single.get(w.as_tensor()).unwrap())
    );
}

fn run(opt: &mut AdamW, steps: std::ops::Range<usize>) {
    for t in steps {
        let grads: Vec<Tensor> = opt
            .vars()
            .iter()
            .enumerate()
            .map(|(j, v)| seeded(v.dims(), 100 + 7 * t as u64 + j as u64))
            .collect();
        opt.step(&grads, lr_at(Schedule::Cosine, 1e-2, t, 6, 2))
            .unwrap();
    }
}

#[test]
fn state_round_trip_resumes_exactly() {
    let config = AdamWConfig {
        weight_decay: 0.05,
        ..AdamWConfig::default()
    };
    let fresh = || -> Vec<Var> {
        vec![
            Var::from_tensor(&seeded(&[4, 3], 5)).unwrap(),
            Var::from_tensor(&seeded(&[7], 6)).unwrap(),
        ]
    };
    let mut straight = AdamW::new(fresh(), config).unwrap();
    run(&mut straight, 0..6);

    let mut first = AdamW::new(fresh(), config).unwrap();
    run(&mut first, 0..3);
    // Through a safetensors file, as a checkpoint would go.
    let dir = std::env::temp_dir().join(format!("abba-optim-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("optimizer.safetensors");
    let state: HashMap<String, Tensor> = first.state().into_iter().collect();
    assert_eq!(state.len(), 4);
    assert!(state.contains_key("m.1") && state.contains_key("v.0"));
    candle_core::safetensors::save(&state, &path).unwrap();
    let loaded = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    let resumed_vars: Vec<Var> = first
        .vars()
        .iter()
        .map(|v| Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap())
        .collect();
    let mut resumed = AdamW::new(resumed_vars, config).unwrap();
    resumed.load_state(&loaded, first.step_count()).unwrap();
    assert_eq!(resumed.step_count(), 3);
    run(&mut resumed, 3..6);
    for (a, b) in straight.vars().iter().zip(resumed.vars()) {
        assert_eq!(flat_f32(a.as_tensor()), flat_f32(b.as_tensor()));
    }
}

#[test]
fn bad_inputs_are_errors_that_name_the_fix() {
    let vars = vec![
        Var::zeros((2, 3), DType::F32, &Device::Cpu).unwrap(),
        Var::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    ];
    let mut opt = AdamW::new(vars, AdamWConfig::default()).unwrap();
    let g0 = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
    let g1 = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
    let one_line = |e: AbbaError| {
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        msg
    };

    let msg = one_line(opt.step(std::slice::from_ref(&g0), 1e-3).unwrap_err());
    assert!(msg.contains("1 gradients for 2 parameters"), "{msg}");
    let msg = one_line(opt.step(&[g1.clone(), g0.clone()], 1e-3).unwrap_err());
    assert!(msg.contains("shape"), "{msg}");
    let msg = one_line(opt.step(&[g0.clone(), g1.clone()], f64::NAN).unwrap_err());
    assert!(msg.contains("learning rate"), "{msg}");
    assert_eq!(opt.step_count(), 0, "failed steps change nothing");
    opt.step(&[g0.clone(), g1.clone()], 1e-3).unwrap();

    let mut state: HashMap<String, Tensor> = opt.state().into_iter().collect();
    state.remove("v.1");
    let msg = one_line(opt.load_state(&state, 1).unwrap_err());
    assert!(msg.contains("lacks 'v.1'"), "{msg}");
    state.insert("v.1".into(), g0.clone());
    let msg = one_line(opt.load_state(&state, 1).unwrap_err());
    assert!(msg.contains("'v.1' has shape"), "{msg}");
    state.insert("v.1".into(), g1.clone());
    state.insert("m.2".into(), g1.clone());
    let msg = one_line(opt.load_state(&state, 1).unwrap_err());
    assert!(msg.contains("unexpected entry 'm.2'"), "{msg}");
    state.remove("m.2");
    opt.load_state(&state, 1).unwrap();

    for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        let mut grads = vec![g0.clone()];
        let msg = one_line(clip_grad_norm(&mut grads, bad).unwrap_err());
        assert!(msg.contains("max gradient norm"), "{msg}");
    }
    assert_eq!(clip_grad_norm(&mut [], 1.0).unwrap(), 0.0);
}

#[test]
fn half_precision_parameters_update_in_f32_and_keep_their_dtype() {
    let init = seeded(&[8], 9);
    let grads = [seeded(&[8], 10)];
    let f32_var = Var::from_tensor(&init).unwrap();
    let bf16_var = Var::from_tensor(&init.to_dtype(DType::BF16).unwrap()).unwrap();
    let mut a = AdamW::new(vec![f32_var.clone()], AdamWConfig::default()).unwrap();
    let mut b = AdamW::new(vec![bf16_var.clone()], AdamWConfig::default()).unwrap();
    let bf16_grads = [grads[0].to_dtype(DType::BF16).unwrap()];
    for _ in 0..3 {
        a.step(&grads, 1e-2).unwrap();
        b.step(&bf16_grads, 1e-2).unwrap();
    }
    assert_eq!(bf16_var.dtype(), DType::BF16);
    assert!(b.state().iter().all(|(_, t)| t.dtype() == DType::F32));
    // bf16 keeps ~3 significant digits; the trajectories agree to that.
    let diff = flat_f32(f32_var.as_tensor())
        .iter()
        .zip(flat_f32(bf16_var.as_tensor()))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-2, "bf16 run differs by {diff}");
}
