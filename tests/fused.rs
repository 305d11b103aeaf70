//! The fused objective-and-gradient kernels and the tiled ALS solves against the unfused maths: every method, on
//! non-square shapes with tile sizes that do not divide the row count, at one and two threads; finite differences;
//! and bit-for-bit determinism across thread counts.

mod common;

use abba::adapter::scaling::{AbbaScale, LoraScale};
use abba::adapter::{Abba, AbbaChain, Hira, Lora};
use abba::fit::Fitted;
use abba::fit::adam::{self, AdamSpec};
use abba::fit::als::{self, AlsSpec};
use abba::fit::fused::{self, Tiling, Workspace};
use abba::fit::weighted_ls::{Scratch, Weights, solve_rows_tiled};
use abba::linalg::{Real, frob2, gemm};
use common::{rng, uniform};
use ndarray::{Array2, ArrayView2, s};

fn cast<T: Real>(a: &Array2<f64>) -> Array2<T> {
    a.mapv(T::of)
}

/// One fit of each kind with fused kernels, on an m×n target, in precision T.
fn fits<T: Real>(m: usize, n: usize, seed: u64) -> (Array2<T>, Vec<Fitted<T>>) {
    let mut g = rng(seed);
    let mut u = |r: usize, c: usize| cast::<T>(&uniform(r, c, &mut g));
    let t = u(m, n);
    let lora = Lora::new(u(m, 5), u(5, n), LoraScale::Standard { alpha: 8.0 }).unwrap();
    let hira = Hira::new(u(m, n), u(m, 4), u(4, n)).unwrap();
    let abba = Abba::new(
        u(m, 3),
        u(3, n),
        u(m, 4),
        u(4, n),
        AbbaScale::Paper { alpha: 2.0 },
    )
    .unwrap();
    let chain = AbbaChain::new(
        vec![(u(m, 2), u(2, n)), (u(m, 3), u(3, n)), (u(m, 2), u(2, n))],
        AbbaScale::Explicit { scale: 0.7 },
    )
    .unwrap();
    (
        t,
        vec![
            Fitted::Lora(lora),
            Fitted::Hira(hira),
            Fitted::Abba(abba),
            Fitted::Chain(chain),
        ],
    )
}

fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

const TILINGS: [Tiling; 4] = [
    Tiling {
        block: 512,
        tile: 32,
    },
    Tiling { block: 24, tile: 7 },
    Tiling {
        block: 13,
        tile: 13,
    },
    Tiling { block: 1, tile: 1 },
];

#[test]
fn fused_objective_and_every_gradient_match_the_unfused_maths() {
    for (m, n) in [(70, 45), (37, 90)] {
        let (t, fits) = fits::<f64>(m, n, 1);
        let norm2 = frob2(t.view());
        for fit in &fits {
            let (obj, grads) = fit.objective_and_grads_unfused(t.view(), norm2);
            for tiling in TILINGS {
                for threads in [1, 2] {
                    let what = format!(
                        "{:?} {m}×{n} {tiling:?} threads={threads}",
                        fit.as_adapter().kind()
                    );
                    let (o, g) = fused::objective_and_grads(
                        fit,
                        t.view(),
                        norm2,
                        &mut Workspace::default(),
                        tiling,
                        threads,
                    )
                    .unwrap();
                    assert!(
                        (o - obj).abs() <= 1e-13 * obj,
                        "{what}: objective {o} vs {obj}"
                    );
                    assert_eq!(g.len(), grads.len(), "{what}");
                    for (f, (a, b)) in g.iter().zip(&grads).enumerate() {
                        let scale = b.iter().fold(1.0f64, |s, x| s.max(x.abs()));
                        let d = max_abs_diff(a, b);
                        assert!(d <= 1e-12 * scale, "{what}: gradient {f} differs by {d:e}");
                    }
                    let alone = fused::objective(
                        fit,
                        t.view(),
                        norm2,
                        &mut Workspace::default(),
                        tiling,
                        threads,
                    )
                    .unwrap();
                    let exact = frob2((fit.as_adapter().delta() - &t).view()) / norm2;
                    assert!(
                        (alone - exact).abs() <= 1e-13 * exact,
                        "{what}: {alone} vs {exact}"
                    );
                }
            }
        }
    }
}

#[test]
fn fused_gradients_match_finite_differences() {
    let (m, n) = (9, 7);
    let (t, fits) = fits::<f64>(m, n, 2);
    let norm2 = frob2(t.view());
    let tiling = Tiling { block: 4, tile: 3 };
    let objective = |f: &Fitted<f64>| {
        fused::objective_and_grads(f, t.view(), norm2, &mut Workspace::default(), tiling, 1)
            .unwrap()
            .0
    };
    for fit in &fits {
        let (_, grads) =
            fused::objective_and_grads(fit, t.view(), norm2, &mut Workspace::default(), tiling, 2)
                .unwrap();
        let h = 1e-6;
        for (f, grad) in grads.iter().enumerate() {
            for idx in ndarray::indices(grad.dim()) {
                let mut plus = fit.clone();
                plus.as_adapter_mut().factors_mut()[f][idx] += h;
                let mut minus = fit.clone();
                minus.as_adapter_mut().factors_mut()[f][idx] -= h;
                let fd = (objective(&plus) - objective(&minus)) / (2.0 * h);
                let err = (fd - grad[idx]).abs() / (1.0 + fd.abs());
                assert!(
                    err < 1e-6,
                    "{:?} factor {f} {idx:?}: {fd} vs {}",
                    fit.as_adapter().kind(),
                    grad[idx]
                );
            }
        }
    }
}

/// The ABBA step before the fused kernels, written out: P, Q and the cofactors as whole m×n arrays.
fn unfused_abba_step(a: &Abba<f32>, t: &Array2<f32>, norm2: f64) -> Vec<Array2<f32>> {
    unfused_abba_step_with(a, t, norm2, |x, y| gemm(x, y))
}

/// [`unfused_abba_step`] with every matrix product taken by `product`.
fn unfused_abba_step_with(
    a: &Abba<f32>,
    t: &Array2<f32>,
    norm2: f64,
    product: impl Fn(ArrayView2<'_, f32>, ArrayView2<'_, f32>) -> Array2<f32>,
) -> Vec<Array2<f32>> {
    let p = product(a.b1.view(), a.a1.view());
    let q = product(a.b2.view(), a.a2.view());
    let (s, c) = (a.scale, f32::of(2.0 / norm2) * a.scale);
    let mut gq = Array2::zeros(t.dim());
    let mut gp = Array2::zeros(t.dim());
    ndarray::Zip::from(&mut gq)
        .and(&mut gp)
        .and(&p)
        .and(&q)
        .and(t)
        .for_each(|gq, gp, &p, &q, &t| {
            let g = c * (s * p * q - t);
            *gq = g * q;
            *gp = g * p;
        });
    vec![
        product(gq.view(), a.a1.t()),
        product(a.b1.t(), gq.view()),
        product(gp.view(), a.a2.t()),
        product(a.b2.t(), gp.view()),
    ]
}

/// An m×n f32 target and an ABBA (s = 0.5) of ranks r1 and r2, every entry uniform.
fn uniform_abba(
    m: usize,
    n: usize,
    (r1, r2): (usize, usize),
    seed: u64,
) -> (Array2<f32>, Abba<f32>) {
    let mut g = rng(seed);
    let mut u = |r: usize, c: usize| cast::<f32>(&uniform(r, c, &mut g));
    let t = u(m, n);
    let a = Abba::new(
        u(m, r1),
        u(r1, n),
        u(m, r2),
        u(r2, n),
        AbbaScale::Explicit { scale: 0.5 },
    )
    .unwrap();
    (t, a)
}

/// The fused gradients of `fit` at the default tiling and `threads` threads.
fn default_grads(
    fit: &Fitted<f32>,
    t: &Array2<f32>,
    norm2: f64,
    threads: usize,
) -> Vec<Array2<f32>> {
    fused::objective_and_grads(
        fit,
        t.view(),
        norm2,
        &mut Workspace::default(),
        Tiling::default(),
        threads,
    )
    .unwrap()
    .1
}

/// Every gradient equal to its reference bit for bit (`what` names the case).
fn assert_same_bits(grads: &[Array2<f32>], reference: &[Array2<f32>], what: &str) {
    for (f, (x, y)) in grads.iter().zip(reference).enumerate() {
        let differ = x.iter().zip(y).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{what}, gradient {f}: {differ} entries differ");
    }
}

#[test]
fn default_tiling_gives_the_unfused_abba_gradients_bit_for_bit_in_f32() {
    // Row blocks of 512 are faer's depth blocks: ∂A sums the same products in the same order.
    let (t, a) = uniform_abba(1100, 300, (20, 12), 3);
    let norm2 = frob2(t.view());
    let expected = unfused_abba_step(&a, &t, norm2);
    let fit = Fitted::Abba(a);
    // Three blocks (512, 512, 76 rows): at 2 threads a group where each thread takes a block, then a lone block
    // split by tiles and columns; at 3 threads, one group of a block per thread.
    for threads in [1, 2, 3] {
        let grads = default_grads(&fit, &t, norm2, threads);
        assert_same_bits(&grads, &expected, &format!("{threads} threads"));
    }
}

/// a·b summed in the order the fused step documents for every entry (faer's GEMM order): the inner dimension in
/// blocks of 512 from index 0, each block's terms added in order by FMA onto +0, the block sums added in order.
fn documented_product(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    let k = a.ncols();
    Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
        let mut total = 0.0f32;
        for (block, k0) in (0..k).step_by(512).enumerate() {
            let sum =
                (k0..(k0 + 512).min(k)).fold(0.0f32, |acc, l| a[(i, l)].mul_add(b[(l, j)], acc));
            total = if block == 0 { sum } else { total + sum };
        }
        total
    })
}

#[test]
fn a_one_row_tile_or_block_gives_the_documented_gradients_bit_for_bit_in_f32() {
    // 1025 = 2·512 + 1 and 513 rows leave a last block of one row (at 2 threads, 513 rows are one group of a block
    // per thread, and 1025 rows a group of two blocks then the lone last block; at 3 threads 1025 rows are one
    // group); 97 rows, one block cut into tiles of 96 and 1. faer takes a product of one row (a one-row tile's ∂B
    // rows) as a dot product and adds a depth of one (a one-row block's term of ∂A) onto its destination by FMA,
    // both in another order than its GEMM's.
    for (m, ranks) in [
        (1025, (20, 12)),
        (513, (20, 12)),
        (97, (3, 3)),
        (97, (36, 5)),
        (193, (2, 9)),
    ] {
        let (t, a) = uniform_abba(m, 193, ranks, 8);
        let norm2 = frob2(t.view());
        let expected = unfused_abba_step_with(&a, &t, norm2, documented_product);
        let fit = Fitted::Abba(a);
        for threads in [1, 2, 3] {
            let grads = default_grads(&fit, &t, norm2, threads);
            assert_same_bits(
                &grads,
                &expected,
                &format!("{m} rows, ranks {ranks:?}, {threads} threads"),
            );
        }
    }
}

/// The fused objective, summed as the module documents: each row's R² = (s·P⊙Q − T)² (f32, in that order of
/// operations) into eight f64 running sums, chunk by chunk of eight from the row's start (a short last chunk into
/// the first sums), folded pairwise; then the rows in order; over ‖T‖².
fn documented_abba_objective(a: &Abba<f32>, t: &Array2<f32>, norm2: f64) -> f64 {
    let p = gemm(a.b1.view(), a.a1.view());
    let q = gemm(a.b2.view(), a.a2.view());
    let s = a.scale;
    let mut total = 0.0f64;
    for i in 0..t.nrows() {
        let mut lanes = [0.0f64; 8];
        for j in 0..t.ncols() {
            let r = s * p[(i, j)] * q[(i, j)] - t[(i, j)];
            lanes[j % 8] += f64::from(r * r);
        }
        total += ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
            + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    }
    total / norm2
}

#[test]
fn abba_objective_and_gradients_are_the_documented_sums_bit_for_bit_in_f32() {
    let before = fused::abba_register_tiles();
    // Widths with a partial 32- and 8-column tail and narrower than one vector, tile rows not a multiple of six, a
    // five-row block (1029 = 2·512 + 5), unequal ranks; rank 1, one column and one row (where faer sums otherwise
    // and the kernel must step aside).
    for (m, n, ranks) in [
        (1100, 300, (20, 12)),
        (101, 45, (3, 7)),
        (7, 1030, (36, 36)),
        (1029, 13, (2, 5)),
        (40, 50, (1, 4)),
        (40, 1, (3, 3)),
        (1, 40, (3, 3)),
    ] {
        let (t, a) = uniform_abba(m, n, ranks, 8);
        // A scale that is not a power of two, so that the order of s·P⊙Q's products shows.
        let a = Abba::new(a.b1, a.a1, a.b2, a.a2, AbbaScale::Explicit { scale: 0.7 }).unwrap();
        let norm2 = frob2(t.view());
        let expected = documented_abba_objective(&a, &t, norm2);
        let expected_grads = unfused_abba_step(&a, &t, norm2);
        let fit = Fitted::Abba(a);
        for threads in [1, 2] {
            let (objective, grads) = fused::objective_and_grads(
                &fit,
                t.view(),
                norm2,
                &mut Workspace::default(),
                Tiling::default(),
                threads,
            )
            .unwrap();
            assert_eq!(
                objective.to_bits(),
                expected.to_bits(),
                "{m}×{n}, ranks {ranks:?}, {threads} threads: {objective:e} against {expected:e}"
            );
            assert_same_bits(
                &grads,
                &expected_grads,
                &format!("{m}×{n}, ranks {ranks:?}"),
            );
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        assert!(
            fused::abba_register_tiles() > before,
            "the register-tile kernel never ran"
        );
    }
}

#[test]
fn gradients_are_identical_at_any_thread_count_on_edge_shapes() {
    // faer sums one output row (rank 1), one inner row (a 1-row block: 1025 = 2·512 + 1) and one output column
    // (193 = 192 + 1 columns, and at 4 threads four 64-column spans, the last 1 wide) by other paths, which carry
    // on from the value they add onto instead of adding a separate sum; the thread split must not change the bits.
    for (r1, r2) in [(1, 3), (3, 3)] {
        let (t, a) = uniform_abba(1025, 193, (r1, r2), 6);
        let norm2 = frob2(t.view());
        let fit = Fitted::Abba(a);
        let one = default_grads(&fit, &t, norm2, 1);
        for threads in [2, 3, 4] {
            let grads = default_grads(&fit, &t, norm2, threads);
            assert_same_bits(
                &grads,
                &one,
                &format!("ranks ({r1}, {r2}) at {threads} threads"),
            );
        }
    }
}

#[test]
fn results_are_identical_at_one_and_two_threads() {
    // f32 and the default tiling, as the studies run: a tile count that splits unevenly between threads.
    let (m, n) = (200, 150);
    let (t, fits) = fits::<f32>(m, n, 4);
    let norm2 = frob2(t.view());
    for fit in &fits {
        for tiling in [Tiling::default(), TILINGS[1]] {
            let run = |threads| {
                fused::objective_and_grads(
                    fit,
                    t.view(),
                    norm2,
                    &mut Workspace::default(),
                    tiling,
                    threads,
                )
                .unwrap()
            };
            let (o1, g1) = run(1);
            let (o2, g2) = run(2);
            assert_eq!(o1.to_bits(), o2.to_bits(), "{:?}", fit.as_adapter().kind());
            assert_eq!(g1, g2, "{:?}", fit.as_adapter().kind());
        }
    }
    // Whole fits through the global thread setting (the only test here that touches it; the others pass their
    // thread count explicitly, so they do not care).
    let adam_spec = AdamSpec {
        steps: 40,
        lr: 1e-2,
        ..Default::default()
    };
    let als_spec = AlsSpec {
        sweeps: 4,
        ..Default::default()
    };
    let mut results = Vec::new();
    for threads in [1, 2] {
        fused::set_threads(threads);
        let mut finals = Vec::new();
        for fit in &fits {
            let mut f = fit.clone();
            let out = adam::run(&mut f, t.view(), norm2, &adam_spec);
            finals.push((out.curve.last().unwrap().objective, f.as_adapter().delta()));
            if !matches!(f, Fitted::Chain(_)) {
                let mut f = fit.clone();
                let out = als::run(&mut f, t.view(), norm2, &als_spec).unwrap();
                finals.push((out.curve.last().unwrap().objective, f.as_adapter().delta()));
            }
        }
        results.push(finals);
    }
    fused::set_threads(0);
    for ((o1, d1), (o2, d2)) in results[0].iter().zip(&results[1]) {
        assert_eq!(o1.to_bits(), o2.to_bits());
        assert_eq!(d1, d2);
    }
}

/// Row i of the weighted ridge problem solved directly (f64, normal equations by Gaussian elimination).
fn naive_row_solve(t: &Array2<f64>, w: &Array2<f64>, a: &Array2<f64>, lambda: f64) -> Array2<f64> {
    let (m, n) = t.dim();
    let r = a.nrows();
    let mut out = Array2::zeros((m, r));
    for i in 0..m {
        let mut g = Array2::<f64>::zeros((r, r + 1));
        for p in 0..r {
            for q in 0..r {
                g[(p, q)] = (0..n)
                    .map(|j| w[(i, j)].powi(2) * a[(p, j)] * a[(q, j)])
                    .sum();
            }
            g[(p, p)] += lambda;
            g[(p, r)] = (0..n).map(|j| w[(i, j)] * t[(i, j)] * a[(p, j)]).sum();
        }
        for c in 0..r {
            let piv = g[(c, c)];
            for k in c..=r {
                g[(c, k)] /= piv;
            }
            for row in 0..r {
                if row != c {
                    let f = g[(row, c)];
                    for k in c..=r {
                        g[(row, k)] -= f * g[(c, k)];
                    }
                }
            }
        }
        for p in 0..r {
            out[(i, p)] = g[(p, r)];
        }
    }
    out
}

#[test]
fn tiled_weighted_solves_match_a_direct_solve_at_any_tile_and_thread_count() {
    let (m, n, r) = (53, 41, 4);
    let mut g = rng(5);
    let t = uniform(m, n, &mut g);
    let a = uniform(r, n, &mut g);
    let (wb, wa) = (uniform(m, 3, &mut g), uniform(3, n, &mut g));
    let scale = 0.8;
    let w = gemm(wb.view(), wa.view()) * scale;
    let lambda = 1e-3;
    let ones = Array2::ones((m, n));
    let cases: Vec<(&str, Weights<'_, f64>, &Array2<f64>)> = vec![
        ("ones", Weights::Ones, &ones),
        ("dense", Weights::Dense(w.view()), &w),
        (
            "product",
            Weights::Product {
                b: wb.view(),
                a: wa.view(),
                scale,
            },
            &w,
        ),
    ];
    for (name, weights, dense) in cases {
        let expected = naive_row_solve(&t, dense, &a, lambda);
        for tile in [1, 5, 16, 96] {
            // Bit for bit at any thread count for a given tile height (across heights faer may pick other
            // kernels for such small products, so only to rounding).
            let mut first: Option<Array2<f64>> = None;
            for threads in [1, 2] {
                let b = solve_rows_tiled(
                    &mut Scratch::default(),
                    t.view(),
                    weights,
                    a.view(),
                    lambda,
                    tile,
                    threads,
                )
                .unwrap();
                let d = max_abs_diff(&b, &expected);
                assert!(d < 1e-9, "{name} tile={tile} threads={threads}: {d:e}");
                match &first {
                    None => first = Some(b),
                    Some(f) => assert_eq!(f, &b, "{name} tile={tile} threads={threads}"),
                }
            }
        }
    }
    // A column solve: the transposed target, weights (s·B·A)ᵀ = s·Aᵀ·Bᵀ given as a product.
    let at = uniform(r, m, &mut g);
    let expected = naive_row_solve(&t.t().to_owned(), &w.t().to_owned(), &at, lambda);
    let b = solve_rows_tiled(
        &mut Scratch::default(),
        t.t(),
        Weights::Product {
            b: wa.t(),
            a: wb.t(),
            scale,
        },
        at.view(),
        lambda,
        7,
        2,
    )
    .unwrap();
    assert!(max_abs_diff(&b, &expected) < 1e-9);
}

#[test]
fn a_row_whose_system_is_not_positive_definite_fails_with_its_index() {
    let (m, n, r) = (30, 12, 3);
    let mut g = rng(6);
    let t = uniform(m, n, &mut g);
    let a = uniform(r, n, &mut g);
    // Row 17's weights are all zero: its Gram matrix is 0 and, without a ridge, singular.
    let mut w = uniform(m, n, &mut g);
    w.slice_mut(s![17, ..]).fill(0.0);
    for (tile, threads) in [(4, 1), (4, 2), (96, 1)] {
        let err = solve_rows_tiled(
            &mut Scratch::default(),
            t.view(),
            Weights::Dense(w.view()),
            a.view(),
            0.0,
            tile,
            threads,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("row 17"), "{err}");
    }
    // With a ridge the same problem is well posed.
    assert!(
        solve_rows_tiled(
            &mut Scratch::default(),
            t.view(),
            Weights::Dense(w.view()),
            a.view(),
            1e-6,
            4,
            2,
        )
        .is_ok()
    );
}

/// `solve_rows_with` picks its tile height by the thread count (so that the tiles share out evenly), so every
/// height it may pick must give the same bits: in f32, for every kind of weights, each row's Gram matrix and
/// right-hand side do not depend on the tile the row falls in. 129 and 1025 rows leave a one-row last tile at some
/// heights (which faer would sum as a dot product, so it must be joined to the tile before).
#[test]
fn f32_weighted_solves_give_the_same_bits_at_every_tile_height_they_pick() {
    let (n, r) = (600, 36);
    for m in [300, 129, 1025] {
        let mut g = rng(9);
        let f = |x: Array2<f64>| x.mapv(|v| v as f32);
        let t = f(uniform(m, n, &mut g));
        let a = f(uniform(r, n, &mut g));
        let (wb, wa) = (f(uniform(m, 5, &mut g)), f(uniform(5, n, &mut g)));
        let dense = f(uniform(m, n, &mut g));
        let cases = [
            ("ones", Weights::Ones),
            ("dense", Weights::Dense(dense.view())),
            (
                "product",
                Weights::Product {
                    b: wb.view(),
                    a: wa.view(),
                    scale: 0.8f32,
                },
            ),
        ];
        for (name, weights) in cases {
            let mut first: Option<Array2<f32>> = None;
            for tile in [128, 32, 64, 96, 160, 192, 256] {
                for threads in [1, 2] {
                    let b = solve_rows_tiled(
                        &mut Scratch::default(),
                        t.view(),
                        weights,
                        a.view(),
                        1e-3,
                        tile,
                        threads,
                    )
                    .unwrap();
                    match &first {
                        None => first = Some(b),
                        Some(f) => {
                            let differ = f
                                .iter()
                                .zip(&b)
                                .filter(|(x, y)| x.to_bits() != y.to_bits())
                                .count();
                            assert_eq!(
                                differ, 0,
                                "{name}, {m} rows, tile {tile}, {threads} threads: {differ} entries differ from tile 128's"
                            );
                        }
                    }
                }
            }
        }
    }
}
