//! `kind = "delta"` targets: a fine-tuning update (tuned − base) as a reconstruction target, checked against the
//! raw bytes of the two checkpoints read here independently; globs select exactly the projections they name;
//! missing tensors and shape mismatches are one-line errors; a study over every projection of a model runs with
//! no rows/cols, uses each base tensor as W0, and summarises by projection type and layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use abba::study::StudySpec;
use abba::study::store::read_records;
use abba::target::TargetSpec;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("abba-delta-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Little-endian f32 safetensors with the given tensors, header written by hand (no library in the loop).
fn write_safetensors(path: &Path, tensors: &[(&str, (usize, usize), Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut body = Vec::new();
    for (name, (m, n), values) in tensors {
        assert_eq!(values.len(), m * n);
        let start = body.len();
        for v in values {
            body.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": [m, n], "data_offsets": [start, body.len()]}),
        );
    }
    let mut text = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend(text);
    bytes.extend(body);
    std::fs::write(path, bytes).unwrap();
}

/// The tensor `name` of a safetensors file, decoded from the raw bytes at the offsets its header gives.
fn raw_tensor(path: &Path, name: &str) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (s, e) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    bytes[8 + n + s..8 + n + e]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect()
}

const PROJECTIONS: [(&str, (usize, usize)); 4] = [
    ("self_attn.q_proj", (16, 16)),
    ("self_attn.v_proj", (8, 16)),
    ("mlp.up_proj", (24, 16)),
    ("mlp.down_proj", (16, 24)),
];

/// A two-layer "model": base weights, and a tuned copy whose update is random (full rank) per tensor; plus a 1-D
/// norm and the embedding, which globs over projections must not pick up.
fn tiny_model(
    dir: &Path,
    tuned_changes: impl Fn(&str, &[f32], &mut Vec<f32>),
) -> (PathBuf, PathBuf) {
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
    };
    let mut base = Vec::new();
    let mut tuned = Vec::new();
    for layer in 0..2 {
        for (proj, (m, n)) in PROJECTIONS {
            let name = format!("model.layers.{layer}.{proj}.weight");
            let w0: Vec<f32> = (0..m * n).map(|_| next()).collect();
            let mut w1: Vec<f32> = w0.iter().map(|w| w + 0.01 * next()).collect();
            tuned_changes(&name, &w0, &mut w1);
            base.push((name.clone(), (m, n), w0));
            tuned.push((name, (m, n), w1));
        }
    }
    let embed: Vec<f32> = (0..32 * 16).map(|_| next()).collect();
    base.push(("model.embed_tokens.weight".into(), (32, 16), embed.clone()));
    tuned.push(("model.embed_tokens.weight".into(), (32, 16), embed));
    let (b, t) = (dir.join("base"), dir.join("tuned"));
    for (d, tensors) in [(&b, &base), (&t, &tuned)] {
        std::fs::create_dir_all(d).unwrap();
        let refs: Vec<(&str, (usize, usize), Vec<f32>)> = tensors
            .iter()
            .map(|(n, s, v)| (n.as_str(), *s, v.clone()))
            .collect();
        write_safetensors(&d.join("model.safetensors"), &refs);
    }
    (b, t)
}

fn delta(base: &Path, tuned: &Path, tensor: &str) -> TargetSpec {
    TargetSpec::Delta {
        base: base.to_path_buf(),
        tuned: tuned.to_path_buf(),
        tensor: tensor.into(),
        label: None,
    }
}

#[test]
fn a_delta_is_tuned_minus_base_from_the_raw_bytes_and_its_w0_is_the_base() {
    let dir = scratch("bytes");
    let (b, t) = tiny_model(&dir, |_, _, _| {});
    let name = "model.layers.1.mlp.up_proj.weight";
    let spec = delta(&b, &t, name);
    let d = spec.build((0, 0), 0, None).unwrap();
    assert_eq!(d.dim(), (24, 16));
    let (w0, w1) = (
        raw_tensor(&b.join("model.safetensors"), name),
        raw_tensor(&t.join("model.safetensors"), name),
    );
    for (i, x) in d.iter().enumerate() {
        assert_eq!(*x, w1[i] - w0[i], "entry {i}");
    }
    let own = spec.own_w0().unwrap().unwrap();
    assert_eq!(own.iter().copied().collect::<Vec<_>>(), w0);
    assert_eq!(spec.name(), "delta:layers.1.up_proj");
    // A single safetensors file works as well as a model directory.
    let file = delta(
        &b.join("model.safetensors"),
        &t.join("model.safetensors"),
        name,
    );
    assert_eq!(file.build((0, 0), 0, None).unwrap(), d);
}

#[test]
fn a_glob_selects_exactly_the_projections_it_names() {
    let dir = scratch("glob");
    let (b, t) = tiny_model(&dir, |_, _, _| {});
    let names = |pattern: &str| -> Vec<String> {
        delta(&b, &t, pattern)
            .expand()
            .unwrap()
            .into_iter()
            .map(|t| t.name())
            .collect()
    };
    assert_eq!(
        names("*.q_proj"),
        ["delta:layers.0.q_proj", "delta:layers.1.q_proj"]
    );
    assert_eq!(
        names("layers.*.mlp.*"),
        [
            "delta:layers.0.down_proj",
            "delta:layers.0.up_proj",
            "delta:layers.1.down_proj",
            "delta:layers.1.up_proj"
        ]
    );
    assert_eq!(names("layers.1.*").len(), 4);
    assert_eq!(names("*_proj").len(), 8);
    assert_eq!(
        names("*").len(),
        9,
        "every 2-D tensor, the embedding included"
    );
}

#[test]
fn a_missing_tensor_or_a_shape_mismatch_is_one_line() {
    let dir = scratch("errors");
    let (b, t) = tiny_model(&dir, |_, _, _| {});
    let one_line = |e: abba::AbbaError| {
        let s = e.to_string();
        assert_eq!(s.lines().count(), 1, "{s}");
        s
    };
    let e = one_line(delta(&b, &t, "*.o_proj").expand().unwrap_err());
    assert!(e.contains("no 2-D tensor matching '*.o_proj'"), "{e}");
    let e = one_line(
        delta(&b, &t, "model.layers.0.o_proj.weight")
            .build((0, 0), 0, None)
            .unwrap_err(),
    );
    assert!(e.contains("model.layers.0.o_proj.weight"), "{e}");

    // The tuned checkpoint lacks a tensor, or holds it in another shape.
    let (b2, t2) = (dir.join("b2"), dir.join("t2"));
    std::fs::create_dir_all(&b2).unwrap();
    std::fs::create_dir_all(&t2).unwrap();
    write_safetensors(
        &b2.join("model.safetensors"),
        &[
            ("a.q_proj.weight", (4, 4), vec![0.0; 16]),
            ("a.k_proj.weight", (2, 4), vec![0.0; 8]),
        ],
    );
    write_safetensors(
        &t2.join("model.safetensors"),
        &[("a.q_proj.weight", (4, 2), vec![0.0; 8])],
    );
    let e = one_line(delta(&b2, &t2, "*.k_proj").expand().unwrap_err());
    assert!(e.contains("has no 2-D tensor 'a.k_proj.weight'"), "{e}");
    let e = one_line(delta(&b2, &t2, "*.q_proj").expand().unwrap_err());
    assert!(e.contains("4×4") && e.contains("4×2"), "{e}");
    let e = one_line(delta(&dir.join("nowhere"), &t2, "*").expand().unwrap_err());
    assert!(e.contains("nowhere"), "{e}");
}

#[test]
fn a_study_over_every_projection_needs_no_shape_and_summarises_by_projection_and_layer() {
    let dir = scratch("study");
    // Layer 0's q_proj update is rank 1 (up to the f32 rounding of the tuned weights), so LoRA at r = 2
    // reconstructs it (Eckart–Young error ≈ 0).
    let (b, t) = tiny_model(&dir, |name, w0, w1| {
        if name == "model.layers.0.self_attn.q_proj.weight" {
            for (k, w) in w1.iter_mut().enumerate() {
                *w = w0[k] + (k / 16) as f32 * 0.25 * ((k % 16) as f32 - 7.5) * 0.01;
            }
        }
    });
    let spec_text = format!(
        r#"name = "delta"
methods = ["lora", "hira", "abba"]
ranks = [2, 4]
solvers = [{{ kind = "svd" }}, {{ kind = "als", sweeps = 30 }}]
dtype = "f64"
[[targets]]
kind = "delta"
base = "{}"
tuned = "{}"
tensor = "*_proj"
"#,
        b.display(),
        t.display()
    );
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, &spec_text).unwrap();
    let spec = StudySpec::load(&spec_path).unwrap();
    assert_eq!(spec.concrete_targets().unwrap().len(), 8);
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_abba"))
        .arg("study")
        .arg(&spec_path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records = read_records(&out.join("results.csv")).unwrap();
    let mut per_target: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        assert_eq!(
            r.status,
            abba::study::record::Status::Ok,
            "{}: {}",
            r.target,
            r.reason
        );
        *per_target.entry(r.target.clone()).or_default() += 1;
    }
    assert_eq!(per_target.len(), 8);
    // Each tensor's rows carry its own shape.
    let v = records
        .iter()
        .find(|r| r.target == "delta:layers.1.v_proj")
        .unwrap();
    assert_eq!((v.rows, v.cols), (8, 16));
    // Eckart–Young (LoRA's closed form) at r = 2 on one target.
    let lora_r2 = |target: &str| {
        records
            .iter()
            .find(|r| {
                r.target == target && r.method == "lora" && r.solver == "svd" && r.budget_rank == 2
            })
            .unwrap()
            .error
    };
    let (q0, q1) = (
        lora_r2("delta:layers.0.q_proj"),
        lora_r2("delta:layers.1.q_proj"),
    );
    assert!(q0 < 1e-9, "a rank-1 update at r = 2: {q0}");
    assert!(q1 > 0.1, "a full-rank random update at r = 2: {q1}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("by projection type"), "{summary}");
    assert!(
        summary.contains("| method | down_proj | q_proj | up_proj | v_proj | all |"),
        "{summary}"
    );
    assert!(summary.contains("layer 0 | layer 1"), "{summary}");
}
