//! Helpers shared by the integration tests. Everything here is written independently of the library's
//! linear algebra, so it can serve as a reference.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod method_cases;

use ndarray::Array2;
use rand::Rng;

/// A file the repository ships under `data/` (each listed in `data/README.md`). A missing file fails the test
/// with what to do, so a test that needs the data never passes without checking anything.
pub fn shipped_data(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(rel);
    assert!(
        path.is_file(),
        "{} is missing: the repository ships it (see data/README.md); restore it with `git checkout -- data/{rel}`",
        path.display()
    );
    path
}

pub fn rng(seed: u64) -> abba::rng::SeededRng {
    abba::rng::seeded(seed)
}

/// i.i.d. U(-1, 1).
pub fn uniform(rows: usize, cols: usize, rng: &mut impl Rng) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-1.0..1.0))
}

/// Naive triple-loop product, a reference independent of faer.
pub fn naive_matmul(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert_eq!(k, b.nrows());
    Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[(i, p)] * b[(p, j)]).sum())
}

/// A random orthogonal n×n matrix as a product of Householder reflectors (exactly orthogonal in exact
/// arithmetic, built without any library factorisation).
pub fn householder_orthogonal(n: usize, rng: &mut impl Rng) -> Array2<f64> {
    let mut q = Array2::<f64>::eye(n);
    for _ in 0..n.min(8) {
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let vv: f64 = v.iter().map(|x| x * x).sum();
        // q ← q·(I − 2vvᵀ/vᵀv)
        for i in 0..n {
            let dot: f64 = (0..n).map(|k| q[(i, k)] * v[k]).sum();
            for j in 0..n {
                q[(i, j)] -= 2.0 * dot * v[j] / vv;
            }
        }
    }
    q
}

/// A = U·diag(σ)·Vᵀ with known singular values and Householder-built orthogonal factors.
pub fn with_spectrum(m: usize, n: usize, sigma: &[f64], rng: &mut impl Rng) -> Array2<f64> {
    let u = householder_orthogonal(m, rng);
    let v = householder_orthogonal(n, rng);
    let mut a = Array2::<f64>::zeros((m, n));
    for (k, &s) in sigma.iter().enumerate() {
        for i in 0..m {
            for j in 0..n {
                a[(i, j)] += s * u[(i, k)] * v[(j, k)];
            }
        }
    }
    a
}

pub fn frob(a: &Array2<f64>) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

pub fn rel_err(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    frob(&(a - b)) / frob(b).max(1e-300)
}

/// Numerical rank: singular values above max(m, n)·ε·σ_max, from the library's SVD.
pub fn numerical_rank(a: &Array2<f64>) -> usize {
    let s = abba::linalg::singular_values(a.view()).unwrap();
    let tol = s[0] * a.nrows().max(a.ncols()) as f64 * f64::EPSILON * 10.0;
    s.iter().filter(|&&x| x > tol).count()
}

/// A `.npy` file (format 1.0) with the given dtype descriptor, order, shape and raw little-endian data.
pub fn npy_bytes(descr: &str, fortran: bool, shape: (usize, usize), data: &[u8]) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': {order}, 'shape': ({}, {}), }}",
        shape.0, shape.1
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

pub fn write_npy_f64(path: &std::path::Path, rows: usize, cols: usize, values: &[f64]) {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, npy_bytes("<f8", false, (rows, cols), &data)).unwrap();
}

/// Solves the square system in the augmented matrix [A | b] by Gaussian elimination with partial pivoting — a
/// reference independent of the library's solvers.
pub fn gauss_solve(mut g: Array2<f64>) -> Vec<f64> {
    let k = g.nrows();
    for col in 0..k {
        let pivot = (col..k)
            .max_by(|&i, &j| g[(i, col)].abs().total_cmp(&g[(j, col)].abs()))
            .unwrap();
        for j in 0..=k {
            g.swap((col, j), (pivot, j));
        }
        for row in 0..k {
            if row != col {
                let f = g[(row, col)] / g[(col, col)];
                for j in col..=k {
                    g[(row, j)] -= f * g[(col, j)];
                }
            }
        }
    }
    (0..k).map(|i| g[(i, k)] / g[(i, i)]).collect()
}
