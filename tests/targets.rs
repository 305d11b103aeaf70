//! Target generators have the properties their names promise; loaders read what other tools write.

mod common;

use std::path::PathBuf;

use abba::AbbaError;
use abba::target::TargetSpec;
use common::{naive_matmul, npy_bytes, numerical_rank, rel_err, shipped_data};
use ndarray::Array2;

#[test]
fn synthetic_targets_have_their_defining_properties() {
    let (m, n) = (96, 64);
    let q = TargetSpec::Orthogonal.build((m, n), 1, None).unwrap();
    assert!(
        rel_err(&naive_matmul(&q.t().to_owned(), &q), &Array2::eye(n)) < 1e-12,
        "QᵀQ = I"
    );
    let wide = TargetSpec::Orthogonal.build((n, m), 1, None).unwrap();
    assert!(
        rel_err(&naive_matmul(&wide, &wide.t().to_owned()), &Array2::eye(n)) < 1e-12,
        "QQᵀ = I"
    );

    let low = TargetSpec::LowRank { rank: 10 }
        .build((m, n), 2, None)
        .unwrap();
    let s = abba::linalg::singular_values(low.view()).unwrap();
    assert!(
        s.iter().take(10).all(|&x| (x - 1.0).abs() < 1e-10) && s[10] < 1e-10,
        "flat rank-10 spectrum"
    );

    let p = TargetSpec::PowerLaw { exponent: 1.5 }
        .build((m, n), 3, None)
        .unwrap();
    let s = abba::linalg::singular_values(p.view()).unwrap();
    for (i, &x) in s.iter().enumerate() {
        assert!((x - ((i + 1) as f64).powf(-1.5)).abs() < 1e-10);
    }

    let sparse = TargetSpec::Sparse { density: 0.1 }
        .build((400, 400), 4, None)
        .unwrap();
    let nonzero = sparse.iter().filter(|&&x| x != 0.0).count() as f64 / 160_000.0;
    assert!((nonzero - 0.1).abs() < 0.005, "density {nonzero}");
    assert!(sparse.iter().all(|&x| (0.0..1.0).contains(&x)));

    let random = TargetSpec::Random.build((200, 200), 5, None).unwrap();
    let mean = random.sum() / 40_000.0;
    assert!((mean - 0.5).abs() < 0.01 && random.iter().all(|&x| (0.0..1.0).contains(&x)));

    let abba = TargetSpec::AbbaStructured { r1: 3, r2: 4 }
        .build((m, n), 6, None)
        .unwrap();
    assert_eq!(numerical_rank(&abba), 12);
    let w0 = TargetSpec::LowRank { rank: 2 }
        .build((m, n), 7, None)
        .unwrap();
    let hira = TargetSpec::HiraStructured { rank: 3 }
        .build((m, n), 8, Some(&w0))
        .unwrap();
    assert!(numerical_rank(&hira) <= 6);
    assert!(
        TargetSpec::HiraStructured { rank: 3 }
            .build((m, n), 8, None)
            .is_err(),
        "needs W0"
    );
}

#[test]
fn same_seed_same_target_other_seed_other_target() {
    let a = TargetSpec::Gaussian.build((20, 30), 9, None).unwrap();
    assert_eq!(a, TargetSpec::Gaussian.build((20, 30), 9, None).unwrap());
    assert_ne!(a, TargetSpec::Gaussian.build((20, 30), 10, None).unwrap());
}

/// Uses data/minilm/minilm-l6-slice.safetensors (real all-MiniLM-L6-v2 weights, Apache-2.0; see data/README.md).
#[test]
fn safetensors_tensor_loads_by_name_and_unknown_names_list_the_valid_ones() {
    let path = shipped_data("minilm/minilm-l6-slice.safetensors");
    let spec = TargetSpec::Safetensors {
        path: path.clone(),
        tensor: "encoder.layer.0.intermediate.dense.weight".into(),
        w0: None,
        label: None,
    };
    let w = spec.build((0, 0), 0, None).unwrap();
    assert_eq!(w.dim(), (1536, 384));
    // A trained weight: finite, not constant, centred near zero.
    let mean = w.sum() / w.len() as f64;
    assert!(mean.abs() < 0.05 && w.iter().any(|&x| x != w[(0, 0)]));
    // Cross-check against the raw little-endian f32 bytes at the offset the header gives.
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start = header["encoder.layer.0.intermediate.dense.weight"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize;
    let first = f32::from_le_bytes(bytes[8 + header_len + start..][..4].try_into().unwrap());
    assert_eq!(w[(0, 0)], first as f64);

    let err = TargetSpec::Safetensors {
        path,
        tensor: "encoder.layer.9.nope".into(),
        w0: None,
        label: None,
    }
    .build((0, 0), 0, None)
    .unwrap_err();
    assert!(matches!(err, AbbaError::UnknownName { .. }));
    assert!(
        err.to_string()
            .contains("encoder.layer.0.attention.self.query.weight"),
        "{err}"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("abba-targets-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn grey_png_loads_as_a_matrix_in_unit_range() {
    let path = scratch("png").join("g.png");
    let img = image::GrayImage::from_fn(7, 5, |x, y| image::Luma([(x * 30 + y) as u8]));
    img.save(&path).unwrap();
    let m = TargetSpec::Image { path, label: None }
        .build((0, 0), 0, None)
        .unwrap();
    assert_eq!(m.dim(), (5, 7));
    assert_eq!(m[(2, 3)], (3.0 * 30.0 + 2.0) / 255.0);
}

#[test]
fn npy_reads_float32_float64_and_fortran_order_and_rejects_bad_files() {
    let dir = scratch("npy");
    let values: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let f4: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let c_path = dir.join("c.npy");
    std::fs::write(&c_path, npy_bytes("<f4", false, (2, 3), &f4)).unwrap();
    let c = TargetSpec::Npy {
        path: c_path,
        label: None,
    }
    .build((0, 0), 0, None)
    .unwrap();
    assert_eq!(c, ndarray::arr2(&[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]));
    let f_path = dir.join("f.npy");
    let f8: Vec<u8> = (0..6).flat_map(|i| (i as f64).to_le_bytes()).collect();
    std::fs::write(&f_path, npy_bytes("<f8", true, (2, 3), &f8)).unwrap();
    let f = TargetSpec::Npy {
        path: f_path,
        label: None,
    }
    .build((0, 0), 0, None)
    .unwrap();
    assert_eq!(f, ndarray::arr2(&[[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]));
    let bad = dir.join("bad.npy");
    std::fs::write(&bad, npy_bytes("<i8", false, (2, 3), &f8)).unwrap();
    assert!(
        TargetSpec::Npy {
            path: bad.clone(),
            label: None
        }
        .build((0, 0), 0, None)
        .unwrap_err()
        .to_string()
        .contains("float32")
    );
    std::fs::write(&bad, b"not numpy").unwrap();
    assert!(matches!(
        TargetSpec::Npy {
            path: bad,
            label: None
        }
        .build((0, 0), 0, None),
        Err(AbbaError::Format { .. })
    ));
}
