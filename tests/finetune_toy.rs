//! The MNIST toy (`abba::finetune::toy`): adapter gradients inside the MLP against finite differences, frozen
//! bases staying bitwise frozen, ΔW = 0 at step 0, a tiny end-to-end run on synthetic digits, and bad input.

mod common;

use std::path::{Path, PathBuf};

use abba::adapter::section::{MethodEntry, MethodSection};
use abba::adapter::{Method, MethodKind};
use abba::finetune::layers::ForwardCtx;
use abba::finetune::optim::Schedule;
use abba::finetune::toy::train::{TrainOpts, train};
use abba::finetune::toy::{
    Budget, Mlp, PAPER_METHODS, Status, ToySpec, load_digits, load_spec, prepare, run_toy,
};
use abba::rng::seeded;
use candle_core::{DType, Device, Tensor, Var};
use common::shipped_data;
use rand::Rng;

const ADAPTERS: [MethodKind; 3] = [MethodKind::Lora, MethodKind::Hira, MethodKind::Abba];

fn budget(rank: usize) -> Budget {
    Budget {
        rank,
        lora_alpha: 2.0 * rank as f64,
        abba_alpha: 4.0,
    }
}

/// `kind` as the toy builds it from a `methods` entry naming it.
fn template(kind: MethodKind, b: &Budget) -> Method {
    b.template(&MethodSection::named(kind.name())).unwrap()
}

fn entries(names: &[&str]) -> Vec<MethodEntry> {
    names
        .iter()
        .map(|n| MethodEntry::Name(n.to_string()))
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("abba-toy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn random_tensor(rows: usize, cols: usize, seed: u64, dtype: DType) -> Tensor {
    let mut rng = seeded(seed);
    let data: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(data, (rows, cols), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn labels(n: usize, classes: u32) -> Tensor {
    Tensor::from_vec(
        (0..n as u32)
            .map(|i| (i * 7 + 3) % classes)
            .collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn loss_f64(mlp: &Mlp, x: &Tensor, y: &Tensor) -> f64 {
    mlp.loss(x, y, &ForwardCtx::eval())
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Backprop through the whole MLP (both layers adapted) against central differences of the loss, for every
/// element of every adapter factor, in f64. The factors are first set to random values: at the standard inits
/// (B = 0) most gradients vanish and a wrong formula for them could hide.
#[test]
fn adapter_gradients_in_the_mlp_match_finite_differences() {
    let (inputs, hidden, classes, n) = (12, 7, 5, 6);
    let x = random_tensor(n, inputs, 1, DType::F64);
    let y = labels(n, classes as u32);
    for method in ADAPTERS {
        let mut mlp = Mlp::new(inputs, hidden, classes, DType::F64, &Device::Cpu, 2).unwrap();
        let vars = prepare(&mut mlp, &template(method, &budget(4)), &budget(4), 3).unwrap();
        assert_eq!(
            vars.len(),
            if method == MethodKind::Abba { 8 } else { 4 },
            "{method}"
        );
        for (i, v) in vars.iter().enumerate() {
            let (r, c) = v.as_tensor().dims2().unwrap();
            v.set(&(random_tensor(r, c, 100 + i as u64, DType::F64) * 0.5).unwrap())
                .unwrap();
        }
        let grads = mlp
            .loss(&x, &y, &ForwardCtx::eval())
            .unwrap()
            .backward()
            .unwrap();
        let h = 1e-5;
        for (i, var) in vars.iter().enumerate() {
            let analytic = values(
                grads
                    .get(var.as_tensor())
                    .expect("every factor gets a gradient"),
            );
            let base = values(var.as_tensor());
            let shape = var.as_tensor().shape().clone();
            let at = |vals: &[f64]| {
                var.set(&Tensor::from_vec(vals.to_vec(), shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_f64(&mlp, &x, &y)
            };
            for k in 0..base.len() {
                let mut p = base.clone();
                p[k] += h;
                let up = at(&p);
                p[k] -= 2.0 * h;
                let down = at(&p);
                let numeric = (up - down) / (2.0 * h);
                let err = (numeric - analytic[k]).abs();
                assert!(
                    err <= 1e-7 * (1.0 + numeric.abs()),
                    "{method} factor {i} element {k}: backprop {} vs finite differences {numeric}",
                    analytic[k]
                );
            }
            at(&base);
        }
    }
}

/// ABBA's paper init (B2 = 0) starts at ΔW = 0 yet learns: by ∂B2 = s(G⊙B1A1)A2ᵀ only B2 has a gradient at step
/// 0, and ∂B1, ∂A1, ∂A2 are exactly zero (they all carry a factor B2).
#[test]
fn abba_paper_init_gradients_reach_only_b2_at_step_zero() {
    let x = random_tensor(8, 20, 5, DType::F64);
    let y = labels(8, 6);
    let mut mlp = Mlp::new(20, 10, 6, DType::F64, &Device::Cpu, 6).unwrap();
    prepare(
        &mut mlp,
        &template(MethodKind::Abba, &budget(4)),
        &budget(4),
        7,
    )
    .unwrap();
    let grads = mlp
        .loss(&x, &y, &ForwardCtx::eval())
        .unwrap()
        .backward()
        .unwrap();
    for layer in mlp.layers() {
        let Some(w) = layer
            .adapter
            .as_ref()
            .filter(|w| w.method.kind() == MethodKind::Abba)
        else {
            panic!("ABBA adapter missing")
        };
        let [a1, b1, a2, b2] = ["A1", "B1", "A2", "B2"].map(|n| w.var(n).unwrap());
        let norm = |v: &Var| {
            values(grads.get(v.as_tensor()).unwrap())
                .iter()
                .map(|g| g.abs())
                .sum::<f64>()
        };
        assert!(norm(b2) > 1e-6, "B2 must learn from step 0");
        for (name, v) in [("A1", a1), ("B1", b1), ("A2", a2)] {
            assert_eq!(norm(v), 0.0, "{name} gradient at step 0");
        }
    }
}

/// Every adapter starts at ΔW = 0, so the adapted model computes exactly what the pretrained one does; for ABBA
/// this holds although B1A1 is W0's top SVD part (not zero).
#[test]
fn adapters_leave_outputs_unchanged_at_step_zero() {
    let x = random_tensor(16, 784, 8, DType::F32).abs().unwrap();
    let base = Mlp::new(784, 32, 10, DType::F32, &Device::Cpu, 9).unwrap();
    let reference = values(&base.forward(&x, &ForwardCtx::eval()).unwrap());
    for method in ADAPTERS {
        let mut mlp = base.clone();
        prepare(&mut mlp, &template(method, &budget(8)), &budget(8), 10).unwrap();
        if let Some(w) = mlp
            .fc1
            .adapter
            .as_ref()
            .filter(|w| w.method.kind() == MethodKind::Abba)
        {
            let p = values(&w.var("B1").unwrap().matmul(w.var("A1").unwrap()).unwrap());
            assert!(
                p.iter().any(|v| v.abs() > 1e-3),
                "ABBA's first pair should hold W0's top SVD part"
            );
        }
        let out = values(&mlp.forward(&x, &ForwardCtx::train(1)).unwrap());
        assert_eq!(out, reference, "{method} changed the output at step 0");
    }
}

fn snapshot(mlp: &Mlp) -> Vec<Vec<u64>> {
    mlp.layers()
        .iter()
        .flat_map(|l| [Some(&l.weight), l.bias.as_ref()])
        .flatten()
        .map(|t| values(t).iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Adaptation steps change the adapter factors and never a bit of W0 or the biases; full fine-tuning, for
/// contrast, does change them (so the comparison can see a change).
#[test]
fn adaptation_changes_only_adapter_parameters() {
    let x = random_tensor(40, 30, 11, DType::F32);
    let y = labels(40, 10);
    let base = Mlp::new(30, 12, 10, DType::F32, &Device::Cpu, 12).unwrap();
    let before = snapshot(&base);
    let opts = TrainOpts {
        epochs: 3,
        lr: 1e-2,
        batch: 8,
        schedule: Schedule::Constant,
        max_grad_norm: Some(1.0),
        seed: 13,
    };
    for method in PAPER_METHODS {
        let mut mlp = base.clone();
        let vars = prepare(&mut mlp, &template(method, &budget(4)), &budget(4), 14).unwrap();
        let start: Vec<Vec<f64>> = vars.iter().map(|v| values(v.as_tensor())).collect();
        let log = train(&mlp, vars.clone(), &x, &y, &opts, |_, _| {}).unwrap();
        assert_eq!(log.losses.len(), 15);
        assert!(!log.diverged);
        let moved = vars
            .iter()
            .zip(&start)
            .filter(|(v, s)| values(v.as_tensor()) != **s)
            .count();
        assert_eq!(
            moved,
            vars.len(),
            "{method}: every trainable tensor should move"
        );
        if method == MethodKind::Full {
            assert_ne!(
                snapshot(&mlp),
                before,
                "full fine-tuning must change the base"
            );
            assert_eq!(
                snapshot(&base),
                before,
                "full fine-tuning of a copy changed the original"
            );
        } else {
            assert_eq!(
                snapshot(&mlp),
                before,
                "{method} changed a base weight or bias"
            );
        }
    }
}

/// Synthetic "digits": each class lights its own band of pixels over faint noise, so a small MLP learns them.
fn write_synthetic_csv(path: &Path, per_class: usize, seed: u64) {
    let mut rng = seeded(seed);
    let mut text = String::new();
    for i in 0..per_class * 10 {
        let label = i % 10;
        let band = label * 78..label * 78 + 78;
        let pixels: Vec<String> = (0..784)
            .map(|p| {
                let v = if band.contains(&p) {
                    rng.random_range(120..=255)
                } else {
                    rng.random_range(0..=60)
                };
                v.to_string()
            })
            .collect();
        text.push_str(&format!("{},{label}\n", pixels.join(",")));
    }
    std::fs::write(path, text).unwrap();
}

fn tiny_spec(data: &Path, out: &Path) -> ToySpec {
    ToySpec {
        task: "mnist-toy".into(),
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        seed: 3,
        train_per_class: 12,
        test_per_class: 6,
        hidden: 16,
        pretrain_epochs: 4,
        pretrain_lr: 5e-3,
        pretrain_batch: 16,
        adapt_epochs: 6,
        adapt_lr: 2e-2,
        adapt_batch: 8,
        schedule: Schedule::Constant,
        max_grad_norm: None,
        rank: 4,
        lora_alpha: 8.0,
        abba_alpha: 4.0,
        methods: entries(&["lora", "hira", "abba", "full"]),
    }
}

/// A few steps of every method lower the 8–9 loss from the pretrained model's; the parameter counts are the
/// closed forms r·(m+n) summed over both layers (equal for the three adapters) and m·n + m for full; the four
/// files appear; and a second run with the same spec gives the same numbers.
#[test]
fn tiny_run_lowers_the_loss_for_every_method_and_repeats_exactly() {
    let dir = scratch("tiny");
    let data = dir.join("digits.csv");
    write_synthetic_csv(&data, 20, 21);
    let spec = tiny_spec(&data, &dir.join("out"));
    let report = run_toy(&spec, &spec.out, false).unwrap();
    assert!(
        report.pretrain_acc_old > 0.5,
        "pretraining failed: {}",
        report.pretrain_acc_old
    );
    let (h, r) = (16, 4);
    let adapter_params = r * ((h + 784) + (10 + h));
    let full_params = h * 784 + h + 10 * h + 10;
    assert_eq!(report.methods.len(), 4);
    for m in &report.methods {
        assert_eq!(m.status, Status::Ok, "{}", m.method);
        let want = if m.method == "full" {
            full_params
        } else {
            adapter_params
        };
        assert_eq!(m.trainable_params, want, "{}", m.method);
        assert_eq!(m.losses.len(), 6 * (2 * 12usize).div_ceil(8));
        assert!(
            m.final_loss < 0.6 * report.loss_before,
            "{}: loss {} did not fall from {}",
            m.method,
            m.final_loss,
            report.loss_before
        );
    }
    for name in ["results.csv", "loss.csv", "loss.png", "summary.md"] {
        assert!(spec.out.join(name).is_file(), "{name} missing");
    }
    let results = std::fs::read_to_string(spec.out.join("results.csv")).unwrap();
    assert!(
        results.starts_with("method,trainable_params,acc_new,acc_old,final_loss,seconds,status\n")
    );
    assert_eq!(results.lines().count(), 5);
    let losses = std::fs::read_to_string(spec.out.join("loss.csv")).unwrap();
    assert_eq!(
        losses.lines().count(),
        1 + report.methods.iter().map(|m| m.losses.len()).sum::<usize>()
    );
    let png = image::open(spec.out.join("loss.png")).unwrap();
    assert!(png.width() > 500 && png.height() > 300);

    let again = run_toy(&spec, &dir.join("out2"), false).unwrap();
    assert_eq!(again.loss_before.to_bits(), report.loss_before.to_bits());
    for (a, b) in again.methods.iter().zip(&report.methods) {
        assert_eq!(a.losses, b.losses, "{}", a.method);
        assert_eq!(
            (a.acc_new, a.acc_old, a.final_loss),
            (b.acc_new, b.acc_old, b.final_loss)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A learning rate far too high makes a method's loss non-finite: it is recorded as diverged and the rest still run.
#[test]
fn a_diverging_method_is_recorded_and_the_others_run() {
    let dir = scratch("diverge");
    let data = dir.join("digits.csv");
    write_synthetic_csv(&data, 20, 22);
    let mut spec = tiny_spec(&data, &dir.join("out"));
    spec.adapt_lr = 1e30;
    spec.methods = entries(&["full", "lora"]);
    let report = run_toy(&spec, &spec.out, false).unwrap();
    assert_eq!(report.methods.len(), 2);
    let full = &report.methods[0];
    assert_eq!(full.status, Status::Diverged);
    assert!(full.final_loss.is_nan() && full.acc_new.is_nan());
    let results = std::fs::read_to_string(spec.out.join("results.csv")).unwrap();
    assert!(
        results.lines().nth(1).unwrap().ends_with(",diverged"),
        "{results}"
    );
    assert!(
        results.lines().nth(2).unwrap().starts_with("lora,"),
        "{results}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_rows_and_missing_files_name_the_file_and_line() {
    let dir = scratch("bad");
    let good = vec!["0"; 784].join(",");
    let cases = [
        (format!("{good},1\n{good},x\n"), ":2:", "not a number"),
        (
            format!("{good},1\n\n{good}\n"),
            ":3:",
            "expected 784 pixels",
        ),
        (format!("{good},12\n"), ":1:", "labels must be digits"),
        (
            format!("{},300,3\n", vec!["0"; 783].join(",")),
            ":1:",
            "pixels must be 0–255",
        ),
    ];
    for (i, (text, line, why)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.csv"));
        std::fs::write(&path, text).unwrap();
        let err = load_digits(&path, 784).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}{line}", path.display())),
            "case {i}: {err}"
        );
        assert!(err.contains(why), "case {i}: {err}");
        assert_eq!(err.lines().count(), 1, "case {i}: {err}");
    }
    let missing = dir.join("nope.csv.gz");
    let err = load_digits(&missing, 784).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// gzip is recognised by content: the same rows load identically from .csv and .csv.gz.
#[test]
fn gzip_and_plain_csv_load_the_same() {
    use std::io::Write;
    let dir = scratch("gz");
    let plain = dir.join("d.csv");
    write_synthetic_csv(&plain, 2, 23);
    let gz = dir.join("d.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    enc.finish().unwrap();
    let (a, b) = (
        load_digits(&plain, 784).unwrap(),
        load_digits(&gz, 784).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.len(), 20);
    assert!(a.images.iter().all(|p| (0.0..=1.0).contains(p)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn spec_errors_give_line_and_column_and_the_shipped_spec_loads() {
    let dir = scratch("spec");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "task = \"mnist-toy\"\ndata = \"d.csv\"\nout = \"o\"\nrank = 8\nranks = 3\n",
    )
    .unwrap();
    let err = load_spec(&path).unwrap_err().to_string();
    assert!(err.contains(&format!("{}:5:1", path.display())), "{err}");
    std::fs::write(
        &path,
        "task = \"mnist-toy\"\ndata = \"d.csv\"\nout = \"o\"\nrank = 7\n",
    )
    .unwrap();
    assert!(
        load_spec(&path)
            .unwrap_err()
            .to_string()
            .contains("even rank")
    );
    std::fs::write(&path, "task = \"llm\"\ndata = \"d.csv\"\nout = \"o\"\n").unwrap();
    assert!(
        load_spec(&path)
            .unwrap_err()
            .to_string()
            .contains("mnist-toy")
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/finetune-mnist.toml");
    let spec = load_spec(&shipped).unwrap();
    let names: Vec<String> = PAPER_METHODS.iter().map(|k| k.name().to_string()).collect();
    assert_eq!(
        spec.methods,
        entries(&names.iter().map(String::as_str).collect::<Vec<_>>())
    );
    assert_eq!(spec.out, Path::new("results/finetune/mnist"));
}

/// The shipped file, data/mnist/mnist_5k.csv.gz (see data/README.md): 5,000 images, 500 per digit.
#[test]
fn the_shipped_mnist_subset_loads() {
    let path = shipped_data("mnist/mnist_5k.csv.gz");
    let digits = load_digits(&path, 784).unwrap();
    assert_eq!(digits.len(), 5000);
    for d in 0..10u8 {
        assert_eq!(
            digits.labels.iter().filter(|&&l| l == d).count(),
            500,
            "digit {d}"
        );
    }
    assert!(digits.images.iter().all(|p| (0.0..=1.0).contains(p)));
}

/// Every method of the project adapts the toy: each lowers the 8–9 loss from the pretrained model's, or — for a
/// budget its discrete sizes cannot reach on these small layers — is recorded as failed with the nearest sizes
/// while the others run.
#[test]
fn every_method_runs_in_the_toy() {
    let dir = scratch("every");
    let data = dir.join("digits.csv");
    write_synthetic_csv(&data, 20, 23);
    let mut spec = tiny_spec(&data, &dir.join("out"));
    let mut methods = entries(&[
        "rslora",
        "pissa",
        "olora",
        "dora",
        "lokr",
        "krona",
        "kradapter",
    ]);
    let mut chain = MethodSection::named("abba-chain");
    chain.ranks = Some(vec![2, 1, 1]);
    methods.push(MethodEntry::Table(chain));
    for kind in [1, 6] {
        let mut mora = MethodSection::named("mora");
        mora.mora_type = Some(kind);
        methods.push(MethodEntry::Table(mora));
    }
    spec.methods = methods;
    let report = run_toy(&spec, &spec.out, false).unwrap();
    assert_eq!(report.methods.len(), spec.methods.len());
    let mut ran = 0;
    for m in &report.methods {
        match m.status {
            Status::Ok => {
                ran += 1;
                // Sized to the budget within 10 % per layer, so within 10 % in total — but for the two that
                // keep their own sizes.
                let budget = 4 * ((16 + 784) + (10 + 16));
                if !matches!(m.method.as_str(), "kradapter" | "abba-chain") {
                    let off = (m.trainable_params as f64 / budget as f64 - 1.0).abs();
                    assert!(
                        off <= 0.1,
                        "{}: {} params for a budget of {budget}",
                        m.method,
                        m.trainable_params
                    );
                }
                assert!(
                    m.final_loss < 0.8 * report.loss_before,
                    "{}: loss {} did not fall from {}",
                    m.method,
                    m.final_loss,
                    report.loss_before
                );
            }
            Status::Failed => {
                let e = m.error.as_deref().unwrap();
                assert!(e.contains("nearest"), "{}: {e}", m.method);
            }
            Status::Diverged => panic!("{} diverged", m.method),
        }
    }
    assert!(
        ran >= 8,
        "only {ran} methods ran: {:?}",
        report
            .methods
            .iter()
            .map(|m| (&m.method, &m.error))
            .collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
