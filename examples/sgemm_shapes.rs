//! Times `linalg::gemm_into_par` (our AVX-512 kernel where it applies) against faer's `matmul` on the shapes
//! given as `M K N` triples, and checks that both give the same bits. `cargo run --release --example sgemm_shapes
//! -- 2048 2048 2048 1024 1024 36`.
use std::time::Instant;

use abba::linalg::{gemm_into_par, threads_scope};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::Array2;
use rand::{Rng, SeedableRng};

fn faer_product(dst: &mut Array2<f32>, a: &Array2<f32>, b: &Array2<f32>, threads: usize) {
    let (m, n) = dst.dim();
    let k = a.ncols();
    // SAFETY: the arrays are standard (row-major) layout and live for the call.
    unsafe {
        matmul(
            MatMut::from_raw_parts_mut(dst.as_mut_ptr(), m, n, n as isize, 1),
            Accum::Replace,
            MatRef::from_raw_parts(a.as_ptr(), m, k, k as isize, 1),
            MatRef::from_raw_parts(b.as_ptr(), k, n, n as isize, 1),
            1.0f32,
            if threads == 1 {
                Par::Seq
            } else {
                Par::rayon(threads)
            },
        )
    }
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..7)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[3]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let sides: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sides are integers"))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    println!("m,k,n,threads,ours_ms,faer_ms,ratio,same_bits");
    for s in sides.chunks(3) {
        let (m, k, n) = (s[0], s[1], s[2]);
        let a = Array2::from_shape_fn((m, k), |_| rng.random::<f32>() - 0.5);
        let b = Array2::from_shape_fn((k, n), |_| rng.random::<f32>() - 0.5);
        for threads in [1, 2] {
            let _scope = threads_scope(threads);
            let mut ours = Array2::zeros((m, n));
            let mut theirs = Array2::zeros((m, n));
            // Interleaved, so that neither side always runs first after the pool's threads went to sleep.
            let (mut t_ours, mut t_faer) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                t_ours.push(median_ms(|| {
                    gemm_into_par(ours.view_mut(), false, a.view(), b.view(), 1.0, true)
                }));
                t_faer.push(median_ms(|| faer_product(&mut theirs, &a, &b, threads)));
            }
            let (t_ours, t_faer) = (median(t_ours), median(t_faer));
            let same = ours
                .iter()
                .zip(&theirs)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            println!(
                "{m},{k},{n},{threads},{t_ours:.3},{t_faer:.3},{:.2},{same}",
                t_ours / t_faer
            );
        }
    }
}
