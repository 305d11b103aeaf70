//! The f32 product against faer's own `matmul`, bit for bit. Large f32 products run on our AVX-512 kernel
//! (`linalg::sgemm_avx512`) where the CPU has it, and every number the project computes was made with faer's:
//! both must sum every entry's terms in the same order. Also checked against an f64 product, so that a kernel
//! agreeing with faer by accident of a shared mistake would still fail.

mod common;

use abba::linalg::{avx512_sgemm_products, gemm_into_par, threads_scope};
use common::{naive_matmul, rel_err};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, ShapeBuilder, s};
use rand::{Rng, SeedableRng};

fn random(rows: usize, cols: usize, column_major: bool, rng: &mut impl Rng) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols).set_f(column_major), |_| {
        rng.random::<f32>() - 0.5
    })
}

fn faer_product(
    dst: &mut ArrayViewMut2<'_, f32>,
    accumulate: bool,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    alpha: f32,
) {
    let (m, n) = dst.dim();
    let (ds, as_, bs) = (
        dst.strides().to_vec(),
        a.strides().to_vec(),
        b.strides().to_vec(),
    );
    // SAFETY: the views are valid for their shapes and strides for the call; dst is uniquely borrowed.
    unsafe {
        matmul(
            MatMut::from_raw_parts_mut(dst.as_mut_ptr(), m, n, ds[0], ds[1]),
            if accumulate {
                Accum::Add
            } else {
                Accum::Replace
            },
            MatRef::from_raw_parts(a.as_ptr(), a.nrows(), a.ncols(), as_[0], as_[1]),
            MatRef::from_raw_parts(b.as_ptr(), b.nrows(), b.ncols(), bs[0], bs[1]),
            alpha,
            Par::Seq,
        )
    }
}

fn differing_entries(x: &Array2<f32>, y: &Array2<f32>) -> usize {
    x.iter()
        .zip(y)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count()
}

/// Every layout the crate passes: row- and column-major operands and output, transposed and sliced views,
/// replace and accumulate, alpha 1 and not, 1 and 2 threads; shapes that are not multiples of the tiles and an inner
/// dimension with a partial last block of 512.
#[test]
fn large_f32_products_give_faers_bits_in_every_layout() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let shapes = [
        (600, 1037, 530),
        (530, 700, 611),
        (1030, 512, 257),
        (257, 1300, 1030),
        // Short sides: partial 12-column tiles, a single depth block shorter than a tile's rows.
        (40, 300, 150),
        // Few right columns: a column-major left operand is read in place, its last tile 8 rows (no upper half).
        (520, 600, 40),
        (700, 70, 35),
        // More columns than one packed block of the right operand (1536).
        (140, 300, 1700),
    ];
    let mut total = 0;
    let before = avx512_sgemm_products();
    for &(m, k, n) in &shapes {
        for layout in 0..5 {
            let (a_cm, b_cm, d_cm) = (layout & 1 == 1, layout & 2 == 2, layout == 3);
            // Operands with room around them, so that sliced views have strides that are not their widths; in
            // layout 4 every other column of b, so that neither of its strides is 1.
            let a_big = random(m + 3, k + 5, a_cm, &mut rng);
            let b_big = random(k + 2, 2 * n + 7, b_cm, &mut rng);
            let a = a_big.slice(s![1..m + 1, 2..k + 2]);
            let b = if layout == 4 {
                b_big.slice(s![..k, 3..2 * n + 3;2])
            } else {
                b_big.slice(s![..k, 3..n + 3])
            };
            let start = random(m, n, d_cm, &mut rng);
            for (accumulate, alpha) in [(false, 1.0f32), (true, 0.7), (false, -1.3)] {
                for threads in [1, 2] {
                    let _threads = threads_scope(threads);
                    let mut ours = start.clone();
                    let mut theirs = start.clone();
                    gemm_into_par(ours.view_mut(), accumulate, a, b, alpha, true);
                    faer_product(&mut theirs.view_mut(), accumulate, a, b, alpha);
                    let differ = differing_entries(&ours, &theirs);
                    assert_eq!(
                        differ, 0,
                        "{m}×{k}×{n}, layout {layout}, accumulate {accumulate}, alpha {alpha}, {threads} threads: {differ} entries differ from faer's"
                    );
                    // Transposed problem: dstᵀ = bᵀ·aᵀ, through transposed views.
                    let mut ours_t = start.t().to_owned();
                    let mut theirs_t = start.t().to_owned();
                    gemm_into_par(ours_t.view_mut(), accumulate, b.t(), a.t(), alpha, true);
                    faer_product(&mut theirs_t.view_mut(), accumulate, b.t(), a.t(), alpha);
                    assert_eq!(
                        differing_entries(&ours_t, &theirs_t),
                        0,
                        "transposed {m}×{k}×{n}, layout {layout}"
                    );
                    total += 2;
                }
            }
            // Independent of faer: the f64 product of the same f32 numbers.
            let mut ours = Array2::zeros((m, n));
            gemm_into_par(ours.view_mut(), false, a, b, 1.0, true);
            let exact = naive_matmul(&a.mapv(f64::from), &b.mapv(f64::from));
            let err = rel_err(&ours.mapv(f64::from), &exact);
            assert!(
                err < 1e-5,
                "{m}×{k}×{n}: relative error {err:.2e} against the f64 product"
            );
        }
    }
    // On an AVX-512 CPU most of these cases must have run our kernel, or the comparison above proved nothing (the
    // f64 checks add one product per layout, so this may count a few more than `total`).
    let on_our_kernel = avx512_sgemm_products() - before;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        assert!(
            on_our_kernel >= 2 * total / 3,
            "only {on_our_kernel} of {total} products ran the AVX-512 kernel"
        );
    }
}
