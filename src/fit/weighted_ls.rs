//! The least-squares step every alternating solver is built from: with all other factors fixed, the rows of one
//! factor solve independent weighted ridge problems
//!
//! ```text
//! b_i = argmin_b ‖t_i − (b·A) ⊙ w_i‖² + λ‖b‖²,
//! ```
//!
//! i.e. (A·diag(w_i²)·Aᵀ + λI)·b_i = A·(w_i ⊙ t_i). The Gram matrices of a tile of rows come out of one GEMM of
//! the tile's squared weights against the packed symmetric Khatri–Rao square K of A (K[(p,q), j] = A[p,j]·A[q,j],
//! p ≤ q), so the cost is one m×n×r(r+1)/2 product plus m small Cholesky solves, solved eight rows at a time.
//!
//! Weights given as a product (ABBA's other pair, w = (B·A)·s) are formed a tile at a time and never as an m×n
//! array. Tiles are independent, so they run on [`crate::fit::fused::threads`] threads with the same result at any
//! count; every entry is computed by the same operations as the untiled solve (the GEMMs' inner dimensions are
//! unchanged, the Cholesky runs the scalar algorithm in each lane).

use std::ops::Range;
use std::sync::Mutex;

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, ShapeBuilder, Zip, s};

use crate::error::{AbbaError, Result};
use crate::linalg::{Real, gemm, gemm_into_seq};

/// The weights w of the row problems.
#[derive(Clone, Copy)]
pub enum Weights<'a, T> {
    /// All ones: one Gram matrix shared by every row.
    Ones,
    /// Given entry by entry, the target's shape (HiRA's W0, or its transpose).
    Dense(ArrayView2<'a, T>),
    /// w = (b·a)·scale, formed a tile of rows at a time (ABBA's other pair; for a column solve, b = A2ᵀ and
    /// a = B2ᵀ).
    Product {
        b: ArrayView2<'a, T>,
        a: ArrayView2<'a, T>,
        scale: T,
    },
}

/// Rows solved together in one Cholesky batch (one f64 per lane).
const LANES: usize = 8;

/// Tile heights [`solve_rows_with`] chooses from, preferred first: multiples of 32 (our f32 kernel's register tile;
/// from 128 rows the Gram products run on it, below on faer's), small enough that a tile's weights and Gram
/// matrices stay near L2.
const TILES: [usize; 5] = [128, 96, 64, 160, 192];

/// The tile height whose tiles share out most evenly between `threads` threads, as [`split_map`] deals them (runs
/// of consecutive tiles): the one whose longest run has the fewest rows, the first of [`TILES`] on a tie. With 96
/// rows, 1024 rows made 11 tiles, 6 on one thread and 5 on the other, and the 1024², r = 36 ALS sweep at 2 threads
/// took 29.5–30.5 ms in interleaved runs; with 128 (4 and 4) 27.7–29.1 ms.
///
/// [`split_map`]: crate::fit::fused::split_map
fn balanced_tile(rows: usize, threads: usize) -> usize {
    let longest_run = |tile: usize| {
        let tiles = rows.div_ceil(tile).max(1);
        let runs = threads.clamp(1, tiles);
        (tiles.div_ceil(runs) * tile).min(rows)
    };
    TILES
        .into_iter()
        .min_by_key(|&t| longest_run(t))
        .expect("TILES is not empty")
}

/// Tiles shorter than this are joined to the tile before them: faer computes a product with one output row as a
/// dot product (another order of the sums than its matrix kernels), so a lone last row would get other bits, and
/// with the tile height following the thread count, so would the results.
const MIN_TILE: usize = 32;

/// Rows and columns of the register blocks the factorisation works in: each row's sums for [`COLS`] columns share
/// one load of the row, and [`ROWS`]·[`COLS`] independent sums keep the multiply–subtract units busy instead of
/// waiting on one sum's latency.
const ROWS: usize = 4;
const COLS: usize = 4;

crate::fit::fused::multiversion! {
/// In-place Cholesky solve of [`LANES`] small SPD systems at once, entry `[e][l]` of lane l (f64). Each lane runs
/// exactly the scalar algorithm ([`cholesky_solve`]: entry (i, j) is g_ij − Σ_{k<j} L_ik·L_jk summed in order of
/// k, then divided by L_jj; the substitutions likewise), only the entries are visited in blocks. A lane's flag is
/// false when its matrix is not positive definite (a pivot ≤ 0 or not finite); its solution is then garbage.
fn cholesky_solve_lanes(g: &mut [[f64; LANES]], b: &mut [[f64; LANES]], r: usize) -> [bool; LANES] {
    let mut ok = [true; LANES];
    let mut j = 0;
    while j < r {
        if j + COLS <= r {
            factor_columns::<COLS>(g, r, j, &mut ok);
            j += COLS;
        } else {
            factor_columns::<1>(g, r, j, &mut ok);
            j += 1;
        }
    }
    // L·y = b, ROWS rows at a time: their terms from the rows above the group are independent sums.
    let mut i0 = 0;
    while i0 < r {
        let h = ROWS.min(r - i0);
        let mut s = [[0.0; LANES]; ROWS];
        s[..h].copy_from_slice(&b[i0..i0 + h]);
        for k in 0..i0 {
            let y = b[k];
            for (u, su) in s[..h].iter_mut().enumerate() {
                let x = g[(i0 + u) * r + k];
                for l in 0..LANES {
                    su[l] -= x[l] * y[l];
                }
            }
        }
        for (u, mut su) in s[..h].iter().copied().enumerate() {
            let i = i0 + u;
            for k in i0..i {
                let x = g[i * r + k];
                for l in 0..LANES {
                    su[l] -= x[l] * b[k][l];
                }
            }
            let d = g[i * r + i];
            for l in 0..LANES {
                su[l] /= d[l];
            }
            b[i] = su;
        }
        i0 += h;
    }
    // Lᵀ·x = y: each row's sum starts with the row just solved, so this one stays a chain.
    for i in (0..r).rev() {
        let mut s = b[i];
        for k in i + 1..r {
            let x = g[k * r + i];
            for l in 0..LANES {
                s[l] -= x[l] * b[k][l];
            }
        }
        let d = g[i * r + i];
        for l in 0..LANES {
            s[l] /= d[l];
        }
        b[i] = s;
    }
    ok
}
}

/// Factors columns `j0..j0 + W` of the lower triangle (the columns left of them are done). Every entry's terms
/// from those earlier columns are summed first, several independent sums at once ([`partial_sums`]); the block's
/// own terms follow in order of k: first for the block's rows, pivot by pivot, then for the rows below it.
#[inline(always)]
fn factor_columns<const W: usize>(
    g: &mut [[f64; LANES]],
    r: usize,
    j0: usize,
    ok: &mut [bool; LANES],
) {
    // The block's own rows (entries right of the diagonal are summed too, and never used).
    let own = partial_sums::<W, W>(g, r, j0, j0);
    let mut d = [[0.0; LANES]; W];
    for w in 0..W {
        let j = j0 + w;
        let mut dj = own[w][w];
        for k in j0..j {
            let x = g[j * r + k];
            for l in 0..LANES {
                dj[l] -= x[l] * x[l];
            }
        }
        for l in 0..LANES {
            ok[l] &= dj[l] > 0.0 && dj[l].is_finite();
            dj[l] = dj[l].sqrt();
        }
        g[j * r + j] = dj;
        d[w] = dj;
        for (u, own_u) in own.iter().enumerate().skip(w + 1) {
            let i = j0 + u;
            let mut s = own_u[w];
            for k in j0..j {
                let (x, y) = (g[i * r + k], g[j * r + k]);
                for l in 0..LANES {
                    s[l] -= x[l] * y[l];
                }
            }
            for l in 0..LANES {
                s[l] /= dj[l];
            }
            g[i * r + j] = s;
        }
    }
    let mut i = j0 + W;
    while i + ROWS <= r {
        let s = partial_sums::<ROWS, W>(g, r, i, j0);
        finish_rows(g, r, i, j0, &d, s);
        i += ROWS;
    }
    for i in i..r {
        let s = partial_sums::<1, W>(g, r, i, j0);
        finish_rows(g, r, i, j0, &d, s);
    }
}

/// g_(i+u)(j0+w) − Σ_{k<j0} L_(i+u)k·L_(j0+w)k for u < R, w < W, each summed in order of k.
#[inline(always)]
fn partial_sums<const R: usize, const W: usize>(
    g: &[[f64; LANES]],
    r: usize,
    i: usize,
    j0: usize,
) -> [[[f64; LANES]; W]; R] {
    let mut s: [[[f64; LANES]; W]; R] =
        std::array::from_fn(|u| std::array::from_fn(|w| g[(i + u) * r + j0 + w]));
    for k in 0..j0 {
        let y: [[f64; LANES]; W] = std::array::from_fn(|w| g[(j0 + w) * r + k]);
        for (u, su) in s.iter_mut().enumerate() {
            let x = g[(i + u) * r + k];
            for (sw, yw) in su.iter_mut().zip(&y) {
                for l in 0..LANES {
                    sw[l] -= x[l] * yw[l];
                }
            }
        }
    }
    s
}

/// Rows `i..i + R`, columns `j0..j0 + W`, given their sums over the columns left of the block: the terms of the
/// block's own columns (in order of k), then the division by the pivot. The rows go in lockstep so their
/// divisions, the slowest instruction here, overlap.
#[inline(always)]
fn finish_rows<const R: usize, const W: usize>(
    g: &mut [[f64; LANES]],
    r: usize,
    i: usize,
    j0: usize,
    d: &[[f64; LANES]; W],
    mut s: [[[f64; LANES]; W]; R],
) {
    for w in 0..W {
        for (u, su) in s.iter_mut().enumerate() {
            for k in j0..j0 + w {
                let (x, y) = (g[(i + u) * r + k], g[(j0 + w) * r + k]);
                for l in 0..LANES {
                    su[w][l] -= x[l] * y[l];
                }
            }
            for l in 0..LANES {
                su[w][l] /= d[w][l];
            }
            g[(i + u) * r + j0 + w] = su[w];
        }
    }
}

/// In-place Cholesky solve of one small SPD system (f64), for [`solve_spd`]. Returns false when the matrix is not
/// positive definite.
fn cholesky_solve(g: &mut [f64], b: &mut [f64], r: usize) -> bool {
    for j in 0..r {
        let mut d = g[j * r + j];
        for k in 0..j {
            d -= g[j * r + k] * g[j * r + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        g[j * r + j] = d;
        for i in j + 1..r {
            let mut s = g[i * r + j];
            for k in 0..j {
                s -= g[i * r + k] * g[j * r + k];
            }
            g[i * r + j] = s / d;
        }
    }
    for i in 0..r {
        let mut s = b[i];
        for k in 0..i {
            s -= g[i * r + k] * b[k];
        }
        b[i] = s / g[i * r + i];
    }
    for i in (0..r).rev() {
        let mut s = b[i];
        for k in i + 1..r {
            s -= g[k * r + i] * b[k];
        }
        b[i] = s / g[i * r + i];
    }
    true
}

/// Solves the small SPD system (G + λ·tr(G)/r·I)·x = b in f64 (λ relative to G's mean diagonal, so a singular G
/// gets a minimum-norm-like answer); an error if it is still not positive definite.
pub fn solve_spd(g: &Array2<f64>, b: ndarray::Array1<f64>, lambda: f64) -> Result<Vec<f64>> {
    let r = g.nrows();
    let mean_diag = (0..r).map(|i| g[[i, i]]).sum::<f64>() / r.max(1) as f64;
    let mut flat: Vec<f64> = g.iter().copied().collect();
    for i in 0..r {
        flat[i * r + i] += lambda * mean_diag.max(f64::MIN_POSITIVE);
    }
    let mut x = b.to_vec();
    if cholesky_solve(&mut flat, &mut x, r) {
        Ok(x)
    } else {
        Err(AbbaError::NoConvergence {
            what: "a least-squares solve (the system is not positive definite)".into(),
        })
    }
}

crate::fit::fused::multiversion! {
/// k = x ⊙ y, one row of the packed Khatri–Rao square (2 % of the samples of Figure 2's ALS runs at 4 lanes).
fn hadamard_line<T: Real>(k: &mut [T], x: &[T], y: &[T]) {
    for ((k, &x), &y) in k.iter_mut().zip(x).zip(y) {
        *k = x * y;
    }
}
}

crate::fit::fused::multiversion! {
/// One line of a tile with product weights: x = w·s, then w ← x², wt ← x·t (the unfused formulas).
fn product_line<T: Real>(w: &mut [T], wt: &mut [T], t: &[T], scale: T) {
    let n = w.len();
    let (wt, t) = (&mut wt[..n], &t[..n]);
    for j in 0..n {
        let x = w[j] * scale;
        wt[j] = x * t[j];
        w[j] = x * x;
    }
}
}

crate::fit::fused::multiversion! {
/// One line of a tile with dense weights: w2 ← w², wt ← w·t.
fn dense_line<T: Real>(w2: &mut [T], wt: &mut [T], w: &[T], t: &[T]) {
    let n = w2.len();
    let (wt, w, t) = (&mut wt[..n], &w[..n], &t[..n]);
    for j in 0..n {
        wt[j] = w[j] * t[j];
        w2[j] = w[j] * w[j];
    }
}
}

/// The lines of `v` along its unit-stride axis (rows when `f_order` is false, else columns), or `None` when they
/// are not contiguous.
fn lines<'a, T>(v: ArrayView2<'a, T>, f_order: bool) -> Option<Vec<&'a [T]>> {
    let axis = Axis(usize::from(f_order));
    (0..v.len_of(axis))
        .map(|i| v.index_axis_move(axis, i).to_slice())
        .collect()
}

/// One tile's buffers.
struct TileScratch<T> {
    /// Weights, then their squares (tile × n).
    w2: Array2<T>,
    /// w ⊙ t (tile × n).
    wt: Array2<T>,
    /// Packed Gram matrices (tile × pairs) and right-hand sides (tile × r), column-major: a lane batch reads
    /// consecutive entries.
    grams: Array2<T>,
    rhs: Array2<T>,
    g: Vec<[f64; LANES]>,
    b: Vec<[f64; LANES]>,
}

impl<T: Real> TileScratch<T> {
    fn new() -> Self {
        TileScratch {
            w2: Array2::zeros((0, 0)),
            wt: Array2::zeros((0, 0)),
            grams: Array2::zeros((0, 0)),
            rhs: Array2::zeros((0, 0)),
            g: Vec::new(),
            b: Vec::new(),
        }
    }
}

/// `buf` reshaped to `shape` (column-major when `f_order`), reallocated only when that changes.
fn fit_buf<T: Real>(buf: &mut Array2<T>, shape: (usize, usize), f_order: bool) {
    let same =
        buf.dim() == shape && (shape.0 <= 1 || shape.1 <= 1 || (buf.strides()[0] == 1) == f_order);
    if !same {
        *buf = Array2::zeros(shape.set_f(f_order));
    }
}

/// Buffers reused from one solve to the next: K and a pool of tile buffers (one per thread at work).
#[derive(Default)]
pub struct Scratch<T> {
    k: Array2<T>,
    tiles: Mutex<Vec<TileScratch<T>>>,
}

/// Solves every row's weighted ridge problem; returns B (m×r). `weights = None` means all ones.
pub fn solve_rows<T: Real>(
    target: ArrayView2<'_, T>,
    weights: Option<ArrayView2<'_, T>>,
    a: ArrayView2<'_, T>,
    lambda: f64,
) -> Result<Array2<T>> {
    let weights = weights.map_or(Weights::Ones, Weights::Dense);
    solve_rows_with(&mut Scratch::default(), target, weights, a, lambda)
}

/// As [`solve_rows`], with weights in any form, reusing `scratch`'s buffers.
pub fn solve_rows_with<T: Real>(
    scratch: &mut Scratch<T>,
    target: ArrayView2<'_, T>,
    weights: Weights<'_, T>,
    a: ArrayView2<'_, T>,
    lambda: f64,
) -> Result<Array2<T>> {
    solve_rows_tiled(
        scratch,
        target,
        weights,
        a,
        lambda,
        balanced_tile(target.nrows(), crate::fit::fused::threads()),
        crate::fit::fused::threads(),
    )
}

/// As [`solve_rows_with`] with an explicit tile height and thread count. The result does not depend on the thread
/// count, nor on the height when tiles reach [`MIN_TILE`] rows (a last short tile is joined to the one before).
pub fn solve_rows_tiled<T: Real>(
    scratch: &mut Scratch<T>,
    target: ArrayView2<'_, T>,
    weights: Weights<'_, T>,
    a: ArrayView2<'_, T>,
    lambda: f64,
    tile: usize,
    threads: usize,
) -> Result<Array2<T>> {
    let (m, n) = target.dim();
    let r = a.nrows();
    assert_eq!(
        a.ncols(),
        n,
        "solve_rows: A must have as many columns as the target"
    );
    match weights {
        Weights::Dense(w) => {
            assert_eq!(w.dim(), (m, n), "solve_rows: weights must match the target")
        }
        Weights::Product { b, a: aw, .. } => assert_eq!(
            (b.nrows(), aw.ncols()),
            (m, n),
            "solve_rows: weights must match the target"
        ),
        Weights::Ones => {}
    }
    let pairs: Vec<(usize, usize)> = (0..r).flat_map(|p| (p..r).map(move |q| (p, q))).collect();
    let tile = tile.max(1);
    // A transposed target (a column solve) walks its rows with a stride: give the tile buffers the same layout
    // so the element-wise passes read and write memory in order.
    let f_order = m > 1 && n > 1 && target.strides()[0].abs() < target.strides()[1].abs();
    let shared_gram = match weights {
        Weights::Ones => Some(gemm(a, a.t())),
        _ => {
            // A's rows contiguous first (a column solve passes a transposed view).
            let a = a.as_standard_layout();
            fit_buf(&mut scratch.k, (pairs.len(), n), false);
            for (row, &(p, q)) in pairs.iter().enumerate() {
                let (x, y) = (a.row(p), a.row(q));
                let (x, y) = (
                    x.as_slice().expect("standard"),
                    y.as_slice().expect("standard"),
                );
                let k = scratch.k.row_mut(row).into_slice().expect("standard");
                hadamard_line(k, x, y);
            }
            None
        }
    };
    let k = scratch.k.view();
    let pool = &scratch.tiles;
    let mut out = Array2::zeros((m, r));
    let solve_tile = |(rows, mut out): (Range<usize>, ArrayViewMut2<'_, T>)| -> Option<usize> {
        let h = rows.len();
        let mut ts = pool
            .lock()
            .expect("scratch pool")
            .pop()
            .unwrap_or_else(TileScratch::new);
        let tt = target.slice(s![rows.clone(), ..]);
        fit_buf(&mut ts.grams, (h, pairs.len()), true);
        fit_buf(&mut ts.rhs, (h, r), true);
        match weights {
            Weights::Ones => {
                gemm_into_seq(ts.rhs.view_mut(), false, tt, a.t(), T::one());
            }
            Weights::Dense(w) => {
                let wtile = w.slice(s![rows.clone(), ..]);
                fit_buf(&mut ts.w2, (h, n), f_order);
                fit_buf(&mut ts.wt, (h, n), f_order);
                let len = if f_order { h } else { n };
                match (lines(wtile, f_order), lines(tt, f_order)) {
                    (Some(wl), Some(tl)) if len > 0 => {
                        let w2 = ts.w2.as_slice_memory_order_mut().expect("contiguous");
                        let wt = ts.wt.as_slice_memory_order_mut().expect("contiguous");
                        for (((w2, wt), w), t) in w2
                            .chunks_exact_mut(len)
                            .zip(wt.chunks_exact_mut(len))
                            .zip(wl)
                            .zip(tl)
                        {
                            dense_line(w2, wt, w, t);
                        }
                    }
                    _ => {
                        Zip::from(&mut ts.wt)
                            .and(&wtile)
                            .and(&tt)
                            .for_each(|o, &x, &t| *o = x * t);
                        Zip::from(&mut ts.w2)
                            .and(&wtile)
                            .for_each(|o, &x| *o = x * x);
                    }
                }
            }
            Weights::Product { b, a: aw, scale } => {
                fit_buf(&mut ts.w2, (h, n), f_order);
                fit_buf(&mut ts.wt, (h, n), f_order);
                gemm_into_seq(
                    ts.w2.view_mut(),
                    false,
                    b.slice(s![rows.clone(), ..]),
                    aw,
                    T::one(),
                );
                let len = if f_order { h } else { n };
                match lines(tt, f_order) {
                    Some(tl) if len > 0 => {
                        let w2 = ts.w2.as_slice_memory_order_mut().expect("contiguous");
                        let wt = ts.wt.as_slice_memory_order_mut().expect("contiguous");
                        for ((w, o), t) in w2
                            .chunks_exact_mut(len)
                            .zip(wt.chunks_exact_mut(len))
                            .zip(tl)
                        {
                            product_line(w, o, t, scale);
                        }
                    }
                    _ => Zip::from(&mut ts.w2)
                        .and(&mut ts.wt)
                        .and(&tt)
                        .for_each(|w, o, &t| {
                            let x = *w * scale;
                            *o = x * t;
                            *w = x * x;
                        }),
                }
            }
        }
        if shared_gram.is_none() {
            gemm_into_seq(ts.grams.view_mut(), false, ts.w2.view(), k.t(), T::one());
            gemm_into_seq(ts.rhs.view_mut(), false, ts.wt.view(), a.t(), T::one());
        }
        let failed = solve_tile_rows(&mut ts, shared_gram.as_ref(), &pairs, r, lambda, &mut out);
        pool.lock().expect("scratch pool").push(ts);
        failed.map(|i| rows.start + i)
    };
    let mut jobs = Vec::new();
    let mut rest = out.view_mut();
    for rows in crate::fit::fused::pieces(m, tile, MIN_TILE) {
        let (head, tail) = rest.split_at(Axis(0), rows.len());
        jobs.push((rows, head));
        rest = tail;
    }
    let failures = crate::fit::fused::split_map(jobs, threads, solve_tile);
    if let Some(i) = failures.into_iter().flatten().min() {
        return Err(AbbaError::NoConvergence {
            what: format!(
                "least-squares update of row {i} (singular system: raise the ridge term)"
            ),
        });
    }
    Ok(out)
}

/// Entries `l0..l0 + lanes` of a column, widened to f64 (zeros past `lanes`).
#[inline(always)]
fn load_lanes<T: Real>(col: &[T], l0: usize, lanes: usize) -> [f64; LANES] {
    let mut e = [0.0; LANES];
    if lanes == LANES {
        let c = &col[l0..l0 + LANES];
        for l in 0..LANES {
            e[l] = c[l].f64();
        }
    } else {
        for (e, c) in e.iter_mut().zip(&col[l0..l0 + lanes]) {
            *e = c.f64();
        }
    }
    e
}

crate::fit::fused::multiversion! {
/// Solves a tile's rows from its Gram matrices and right-hand sides (or the shared Gram matrix) into `out`;
/// returns the first row (within the tile) whose system is not positive definite.
fn solve_tile_rows<T: Real>(
    ts: &mut TileScratch<T>,
    shared: Option<&Array2<T>>,
    pairs: &[(usize, usize)],
    r: usize,
    lambda: f64,
    out: &mut ArrayViewMut2<'_, T>,
) -> Option<usize> {
    let h = out.nrows();
    let TileScratch {
        grams, rhs, g, b, ..
    } = ts;
    g.clear();
    g.resize(r * r, [0.0; LANES]);
    b.clear();
    b.resize(r, [0.0; LANES]);
    let grams = grams.as_slice_memory_order().expect("contiguous");
    let rhs = rhs.as_slice_memory_order().expect("contiguous");
    for l0 in (0..h).step_by(LANES) {
        let lanes = LANES.min(h - l0);
        for (c, &(p, q)) in pairs.iter().enumerate() {
            // Only the lower triangle is read; padding lanes solve I·x = 0.
            let e = &mut g[q * r + p];
            *e = match shared {
                Some(sg) => [sg[(p, q)].f64(); LANES],
                None => load_lanes(&grams[c * h..(c + 1) * h], l0, lanes),
            };
            if p == q {
                for (l, x) in e.iter_mut().enumerate() {
                    *x = if l < lanes { *x + lambda } else { 1.0 };
                }
            }
        }
        for (p, bp) in b.iter_mut().enumerate() {
            *bp = load_lanes(&rhs[p * h..(p + 1) * h], l0, lanes);
        }
        let ok = cholesky_solve_lanes(g, b, r);
        if let Some(l) = (0..lanes).find(|&l| !ok[l]) {
            return Some(l0 + l);
        }
        for (p, bp) in b.iter().enumerate() {
            for l in 0..lanes {
                out[(l0 + l, p)] = T::of(bp[l]);
            }
        }
    }
    None
}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Eight random r×r systems: SPD ones (M·Mᵀ plus a shift; in every third lane M has only r/2 columns and the
    /// shift is 10⁻⁹, so those are nearly singular) and, in lane `bad`, one whose last pivot is negative.
    fn systems(r: usize, bad: Option<usize>, seed: u64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut rng = crate::rng::seeded(seed);
        let (mut gs, mut bs) = (Vec::new(), Vec::new());
        for lane in 0..LANES {
            let m: Vec<f64> = (0..r * r).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (cols, shift) = if lane % 3 == 0 {
                ((r / 2).max(1), 1e-9)
            } else {
                (r, 0.5)
            };
            let mut g = vec![0.0; r * r];
            for i in 0..r {
                for j in 0..r {
                    g[i * r + j] = (0..cols).map(|k| m[i * r + k] * m[j * r + k]).sum::<f64>();
                }
                g[i * r + i] += shift;
            }
            if bad == Some(lane) {
                g[(r - 1) * r + (r - 1)] = -1.0;
            }
            gs.push(g);
            bs.push((0..r).map(|_| rng.random_range(-1.0..1.0)).collect());
        }
        (gs, bs)
    }

    /// The lane kernel's blocked visiting order must not change a bit: every lane equals the scalar algorithm's
    /// factor, solution and verdict, at sizes below, at and across the register blocks' edges.
    #[test]
    fn lane_cholesky_is_the_scalar_algorithm_bit_for_bit() {
        for (case, &r) in [1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 36, 73].iter().enumerate() {
            let bad = (case % 2 == 1).then_some(case % LANES);
            let (gs, bs) = systems(r, bad, case as u64);
            let mut g: Vec<[f64; LANES]> = (0..r * r)
                .map(|e| std::array::from_fn(|l| gs[l][e]))
                .collect();
            let mut b: Vec<[f64; LANES]> =
                (0..r).map(|e| std::array::from_fn(|l| bs[l][e])).collect();
            let ok = cholesky_solve_lanes(&mut g, &mut b, r);
            for l in 0..LANES {
                let (mut gl, mut bl) = (gs[l].clone(), bs[l].clone());
                let scalar_ok = cholesky_solve(&mut gl, &mut bl, r);
                assert_eq!(ok[l], scalar_ok, "r = {r}, lane {l}: verdict");
                assert_eq!(
                    ok[l],
                    bad != Some(l),
                    "r = {r}, lane {l}: the indefinite lane"
                );
                if !scalar_ok {
                    continue;
                }
                for i in 0..r {
                    for k in 0..=i {
                        assert_eq!(
                            g[i * r + k][l].to_bits(),
                            gl[i * r + k].to_bits(),
                            "r = {r}, L[{i}][{k}]"
                        );
                    }
                    assert_eq!(b[i][l].to_bits(), bl[i].to_bits(), "r = {r}, x[{i}]");
                }
            }
        }
    }
}
