//! Fused objective-and-gradient kernels of the reconstruction fits: ΔW, the residual against the target and the
//! Hadamard cofactors are formed a few rows at a time and never as whole m×n arrays, so the target is the only
//! m×n array a step reads.
//!
//! Every method has the same shape: pairs (B_i, A_i) whose products P_i = B_i·A_i are combined element by element
//! into ΔW (LoRA s·P, HiRA W0⊙P, ABBA s·P1⊙P2, a chain s·⊙P_i). With G = 2(ΔW − T)/‖T‖² and C_i = ∂L/∂P_i (the
//! cofactor of pair i), ∂B_i = C_i·A_iᵀ and ∂A_i = B_iᵀ·C_i. A step cuts the m rows into *blocks* of
//! [`Tiling::block`] rows and each block into *tiles* of [`Tiling::tile`] rows. For a tile: every P_i into the
//! block's buffer i, one pass over its rows that turns each P_i into C_i in place and sums the squared residual,
//! then the tile's rows of every ∂B_i (ABBA in f32 on AVX-512 forms P_i and C_i in registers instead, in
//! `abba_avx512.rs`). When all tiles of a block are done, ∂A_i += B_i[block]ᵀ·C_i[block]. Up to
//! one block per thread is formed at once (a group). When a group has a block for every thread, each thread takes
//! one (its tiles, then its term of every ∂A_i, added in block order afterwards); otherwise the threads share the
//! group's tiles, then the columns of every ∂A_i.
//!
//! Determinism: tiles are independent (any thread may run any tile), each ∂A entry is summed over the blocks in
//! block order, and the objective is summed per row and then over rows in order, so results do not depend on the
//! number of threads. With the default block of 512 rows (the depth block of faer's GEMM) and the unfused maths'
//! element-wise formulas, every factor gradient is bit-for-bit the unfused one (`tests/fused.rs` checks this in
//! f32); only the objective is summed in another order (eight running sums per row instead of one). Where faer
//! leaves its GEMM order for a row, a tile or block of one row (the last row of m = 512k + 1 rows or of a block
//! 96k + 1 rows high; faer takes a one-row product as a dot product and adds a depth of one by FMA), the fused
//! step keeps the GEMM order, checked against sums written out in that order.

pub mod abba;
#[cfg(target_arch = "x86_64")]
mod abba_avx512;
pub mod chain;
pub mod hira;
pub mod lora;

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, ShapeBuilder, s};
use rayon::prelude::*;

use super::Fitted;
use crate::linalg::{Real, gemm_into_seq};

/// How a fused step cuts the rows of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Rows whose ∂A contributions one product sums (512, faer's depth block, keeps ∂A bit-identical to the
    /// unfused Bᵀ·C). Taken as at most 512: over it, faer would sum a narrow column chunk (below 4096
    /// multiply–adds) in one chain and a wide one in 512-row blocks, so the bits would follow the thread split.
    pub block: usize,
    /// Rows one task forms at a time (products, cofactors, ∂B rows): a multiple of the f32 micro-kernel's 96 rows,
    /// small enough that a tile's products stay in L2.
    pub tile: usize,
}

impl Default for Tiling {
    fn default() -> Self {
        Tiling {
            block: DEPTH_BLOCK,
            tile: 96,
        }
    }
}

impl Tiling {
    /// (block, tile) clamped to the matrix: both at least 1, block at most 512, tile at most block.
    fn sizes(self, rows: usize) -> (usize, usize) {
        let block = self.block.clamp(1, rows.clamp(1, DEPTH_BLOCK));
        (block, self.tile.clamp(1, block))
    }
}

/// 0 = follow [`crate::linalg::set_threads`].
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads a fused kernel (and an ALS solve) may use, apart from the rest of the linear algebra: the study runner
/// raises it for the last runs when cores fall idle. Results do not depend on it. 0 = as
/// [`crate::linalg::set_threads`].
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// The number of threads a fused kernel uses now.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => crate::linalg::thread_count(),
        n => n,
    }
    .max(1)
}

/// How many tiles ABBA's register-tile kernel (f32, AVX-512) formed in this process so far (for tests).
#[doc(hidden)]
pub fn abba_register_tiles() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        abba_avx512::TILES.load(Ordering::Relaxed)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// The longest chain the fused path takes (longer ones go through the unfused maths).
pub const MAX_CHAIN: usize = 8;

/// Buffers of the blocks formed at once (one array per pair, rows [`ROW_PAD`] elements longer than n), per-row sums
/// and, when each thread takes a block, the blocks' ∂A terms, reused from step to step.
#[derive(Default)]
pub struct Workspace<T> {
    bufs: Vec<Array2<T>>,
    row_sums: Vec<f64>,
    /// One block's ∂A_i terms (r_i × n), per block of a group and pair, when each thread takes whole blocks.
    partials: Vec<Array2<T>>,
}

/// Unused elements at the end of each buffer row. With rows exactly n = 1024 f32 long, the ∂A product walks a
/// column panel of C whose rows lie 4 KiB apart, so they all fall in the same few cache sets and evict each other;
/// 16 more elements per row made that product 5–25 % faster in interleaved probes (1024², r = 36 and 72). faer's
/// sums do not depend on the strides, so the bits stay the same.
const ROW_PAD: usize = 16;

/// The most buffer memory a step takes to give each thread a block of its own (64 MiB: 1024² f32 ABBA at 2
/// threads takes 8.5 MB; an f32 ABBA 4096 columns wide gets at most three blocks at a time).
const GROUP_BYTES: usize = 64 << 20;

impl<T: Real> Workspace<T> {
    /// Buffers for `count` pairs of (group, n) rows, and `rows` row sums.
    fn fit(&mut self, count: usize, (group, n): (usize, usize), rows: usize) {
        let shape = (group, n + ROW_PAD);
        self.bufs.truncate(count);
        while self.bufs.len() < count {
            self.bufs.push(Array2::zeros((0, 0)));
        }
        for b in &mut self.bufs {
            if b.dim() != shape {
                *b = Array2::zeros(shape);
            }
        }
        self.row_sums.clear();
        self.row_sums.resize(rows, 0.0);
    }
}

/// `blocks` sets of ∂A_i terms in `partials`, shaped as `shapes` (one per pair).
fn fit_partials<T: Real>(partials: &mut Vec<Array2<T>>, blocks: usize, shapes: &[(usize, usize)]) {
    let count = blocks * shapes.len();
    partials.truncate(count);
    while partials.len() < count {
        partials.push(Array2::zeros((0, 0)));
    }
    for (p, &shape) in partials.iter_mut().zip(shapes.iter().cycle()) {
        if p.dim() != shape {
            *p = Array2::zeros(shape);
        }
    }
}

/// A factor pair (B_i, A_i).
#[derive(Clone, Copy)]
pub struct Pair<'a, T> {
    pub b: ArrayView2<'a, T>,
    pub a: ArrayView2<'a, T>,
}

/// What a method does to one tile once its pair products are formed: `bufs[i]` holds P_i for the tile's rows (to
/// be overwritten with C_i when gradients are wanted), `t` the target's rows and `aux` W0's (HiRA); write each
/// row's squared residual into `sums`.
pub trait TileKernel<T>: Sync {
    fn apply(
        &self,
        bufs: &mut [ArrayViewMut2<'_, T>],
        t: ArrayView2<'_, T>,
        aux: Option<ArrayView2<'_, T>>,
        sums: &mut [f64],
    );

    /// Forms the cofactors of the tile's `rows` (into `bufs`) and their squared residuals straight from the
    /// factors, products included, where the method has a kernel that does it with the same bits; false to have
    /// the pair products formed by GEMM and then [`TileKernel::apply`] run.
    fn cofactors_direct(
        &self,
        _rows: Range<usize>,
        _bufs: &mut [ArrayViewMut2<'_, T>],
        _t: ArrayView2<'_, T>,
        _sums: &mut [f64],
    ) -> bool {
        false
    }
}

/// dst = a·b on the calling thread, for a tile of a matrix of `m` rows: each row with the bits the same row gets
/// in the whole matrix's product. faer takes a product of one row as a dot product, summed in another order than
/// its GEMM's, so a tile of one row of a taller matrix (the last of m = 512k + 1, or of a block 96k + 1 rows
/// high) is summed here in the GEMM's order: the inner dimension in blocks of [`DEPTH_BLOCK`] from index 0, each
/// block's terms in order by FMA onto +0, the block sums added in order. A one-row matrix keeps faer's dot
/// product, as the unfused maths does.
fn product_rows<T: Real>(
    mut dst: ArrayViewMut2<'_, T>,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    m: usize,
) {
    if a.nrows() != 1 || m == 1 {
        gemm_into_seq(dst, false, a, b, T::one());
        return;
    }
    let (row, k) = (a.row(0), a.ncols());
    for (out, col) in dst.row_mut(0).iter_mut().zip(b.columns()) {
        *out = (0..k)
            .step_by(DEPTH_BLOCK)
            .map(|k0| {
                (k0..(k0 + DEPTH_BLOCK).min(k))
                    .fold(T::zero(), |acc, l| row[l].mul_add(col[l], acc))
            })
            .reduce(|total, block| total + block)
            .unwrap_or_else(T::zero);
    }
}

/// The depth block of faer's GEMM: it sums the inner dimension in blocks of this many terms from index 0.
const DEPTH_BLOCK: usize = 512;

/// The share of the outputs one job owns, a block's or a tile's: its rows of every buffer, ∂B_i and row sum.
struct RowsJob<'a, T> {
    rows: Range<usize>,
    bufs: Vec<ArrayViewMut2<'a, T>>,
    db: Vec<ArrayViewMut2<'a, T>>,
    sums: &'a mut [f64],
}

impl<T> RowsJob<'_, T> {
    /// The job's rows cut into pieces of `step` rows from its first row, in order (borrowing its views): a group's
    /// blocks, a block's tiles. Tiles are whole multiples of the micro-kernel's rows: cutting a block into tiles of
    /// 96, 96 and 64 rows changed the gradients' bits.
    fn split(&mut self, step: usize) -> Vec<RowsJob<'_, T>> {
        let ranges: Vec<Range<usize>> = self
            .rows
            .clone()
            .step_by(step.max(1))
            .map(|r0| r0..(r0 + step).min(self.rows.end))
            .collect();
        let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
        let bufs = cut(self.bufs.iter_mut().map(|v| v.view_mut()), Axis(0), &lens);
        let db = cut(self.db.iter_mut().map(|v| v.view_mut()), Axis(0), &lens);
        let sums = cut_slice(&mut self.sums[..], &lens);
        ranges
            .into_iter()
            .zip(bufs)
            .zip(db)
            .zip(sums)
            .map(|(((rows, bufs), db), sums)| RowsJob {
                rows,
                bufs,
                db,
                sums,
            })
            .collect()
    }
}

/// Each view cut along `axis` into consecutive pieces of `lens`, gathered by piece: `[piece][view]`.
fn cut<'a, T>(
    views: impl IntoIterator<Item = ArrayViewMut2<'a, T>>,
    axis: Axis,
    lens: &[usize],
) -> Vec<Vec<ArrayViewMut2<'a, T>>> {
    let mut pieces: Vec<Vec<ArrayViewMut2<'a, T>>> = lens.iter().map(|_| Vec::new()).collect();
    for mut rest in views {
        for (piece, &len) in pieces.iter_mut().zip(lens) {
            let (head, tail) = rest.split_at(axis, len);
            piece.push(head);
            rest = tail;
        }
    }
    pieces
}

/// `v` cut into consecutive pieces of `lens` entries.
fn cut_slice<'a, T>(mut v: &'a mut [T], lens: &[usize]) -> Vec<&'a mut [T]> {
    lens.iter()
        .map(|&len| {
            let (head, rest) = std::mem::take(&mut v).split_at_mut(len);
            v = rest;
            head
        })
        .collect()
}

/// Runs `kernel` over every tile; returns Σ‖R‖² and, with `grads`, [∂B_1, ∂A_1, ∂B_2, ∂A_2, …] (each ∂B_i and
/// ∂A_i multiplied by `grad_scale` after its product, as LoRA's unfused gradients are).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<T: Real, K: TileKernel<T>>(
    pairs: &[Pair<'_, T>],
    target: ArrayView2<'_, T>,
    aux: Option<ArrayView2<'_, T>>,
    grads: bool,
    grad_scale: Option<T>,
    ws: &mut Workspace<T>,
    tiling: Tiling,
    threads: usize,
    kernel: &K,
) -> (f64, Vec<Array2<T>>) {
    let (m, n) = target.dim();
    let target = target.as_standard_layout();
    let aux_std = aux.as_ref().map(|w| w.as_standard_layout());
    let (block, tile) = tiling.sizes(m);
    // Up to `threads` blocks are formed at once (a group), so that each thread can take a whole block: its
    // tiles, then its block's terms of every ∂A_i, with one wait on the threads per group. Sharing each block
    // instead (tiles, then columns of ∂A_i) waited on them once per block and pair and left a thread idle on a
    // block's uneven tiles (288 and 224 rows of 512): at 1024², r = 36, 2 threads ran the step no faster than 1.
    // The group's buffers are capped at GROUP_BYTES; beyond it fewer blocks go at once, and the threads share them.
    let block_bytes = block * (n + ROW_PAD) * pairs.len() * std::mem::size_of::<T>();
    let at_once = threads.clamp(1, (GROUP_BYTES / block_bytes.max(1)).max(1));
    let group = (block * at_once).min(m).max(1);
    ws.fit(pairs.len(), (group, n), m);
    let mut db: Vec<Array2<T>> = if grads {
        pairs
            .iter()
            .map(|p| Array2::zeros((m, p.b.ncols())))
            .collect()
    } else {
        Vec::new()
    };
    let mut da: Vec<Array2<T>> = if grads {
        pairs
            .iter()
            .map(|p| Array2::zeros((p.a.nrows(), n)))
            .collect()
    } else {
        Vec::new()
    };
    let Workspace {
        bufs,
        row_sums,
        partials,
    } = ws;
    for g0 in (0..m).step_by(group) {
        let g1 = (g0 + group).min(m);
        // The group's rows of every buffer, ∂B_i and row sum, cut into its blocks.
        let mut group_job = RowsJob {
            rows: g0..g1,
            bufs: bufs
                .iter_mut()
                .map(|b| b.view_mut().slice_move(s![..g1 - g0, ..n]))
                .collect(),
            db: db
                .iter_mut()
                .map(|d| d.view_mut().slice_move(s![g0..g1, ..]))
                .collect(),
            sums: &mut row_sums[g0..g1],
        };
        let mut block_jobs = group_job.split(block);
        let blocks: Vec<Range<usize>> = block_jobs.iter().map(|j| j.rows.clone()).collect();
        let target = target.view();
        let aux = aux_std.as_ref().map(|w| w.view());
        let do_tile = |job: RowsJob<'_, T>| {
            let RowsJob {
                rows,
                mut bufs,
                db,
                sums,
            } = job;
            let t = target.slice(s![rows.clone(), ..]);
            if !(grads && kernel.cofactors_direct(rows.clone(), &mut bufs, t, sums)) {
                for (buf, p) in bufs.iter_mut().zip(pairs) {
                    product_rows(buf.view_mut(), p.b.slice(s![rows.clone(), ..]), p.a, m);
                }
                kernel.apply(
                    &mut bufs,
                    t,
                    aux.map(|w| w.slice_move(s![rows.clone(), ..])),
                    sums,
                );
            }
            for ((mut d, buf), p) in db.into_iter().zip(&bufs).zip(pairs) {
                // Into a column-major scratch: faer then runs its micro-kernel down the tile's rows rather than
                // down B's few columns (same products, same order, better filled registers at small ranks).
                let mut col = Array2::zeros(d.raw_dim().f());
                product_rows(col.view_mut(), buf.view(), p.a.t(), m);
                if let Some(s) = grad_scale {
                    col *= s;
                }
                d.assign(&col);
            }
        };
        // faer sums a block's term B_i[block]ᵀ·C_i[block] in one chain (a block is one depth block) and adds it
        // onto ∂A_i, so terms formed apart and added afterwards in block order give the same bits, except where
        // faer carries the sum on from ∂A_i's value instead: one output row (rank 1). That keeps to the shared
        // path.
        let separate_sums = pairs.iter().all(|p| p.a.nrows() >= 2);
        if grads && threads > 1 && blocks.len() == threads && !pairs.is_empty() && separate_sums {
            // A block per thread: its tiles, then its terms of every ∂A_i over all columns, from the buffers it
            // has just written.
            let shapes: Vec<(usize, usize)> = pairs.iter().map(|p| (p.a.nrows(), n)).collect();
            fit_partials(partials, blocks.len(), &shapes);
            let jobs: Vec<_> = block_jobs
                .into_iter()
                .zip(partials.chunks_mut(pairs.len()))
                .collect();
            split_map(jobs, threads, |(mut job, terms)| {
                for t in job.split(tile) {
                    do_tile(t);
                }
                let rows = std::slice::from_ref(&job.rows);
                for ((term, buf), p) in terms.iter_mut().zip(&job.bufs).zip(pairs) {
                    add_block_terms(term.view_mut(), 0, p, buf.view(), rows, true);
                }
            });
            for (rows, terms) in blocks.iter().zip(partials.chunks(pairs.len())) {
                for (d, term) in da.iter_mut().zip(terms) {
                    if rows.start == 0 {
                        d.assign(term);
                    } else {
                        *d += term;
                    }
                }
            }
        } else {
            let tiles: Vec<RowsJob<'_, T>> =
                block_jobs.iter_mut().flat_map(|b| b.split(tile)).collect();
            split_map(tiles, threads, do_tile);
            drop(block_jobs);
            drop(group_job);
            if grads {
                accumulate_grads_a(&mut da, pairs, bufs, &blocks, threads);
            }
        }
    }
    if let Some(s) = grad_scale {
        for d in &mut da {
            *d *= s;
        }
    }
    let sum = row_sums.iter().sum();
    let grads = db.into_iter().zip(da).flat_map(|(b, a)| [b, a]).collect();
    (sum, grads)
}

/// ∂A_i (+)= Σ B_i[block]ᵀ·C_i[block] over the group's `blocks` (rows of the target; the buffers hold the group's
/// rows from the first block's), in block order, for every pair; the first block of the matrix overwrites ∂A_i.
/// The columns are split between `threads` threads (each entry is the same whatever the split).
///
/// Each thread takes one span of columns of every ∂A_i (as even as 16-column steps allow) and walks it in chunks
/// of [`CHUNK`] columns, so that the panel of C_i one faer call reads stays in L2: in interleaved single-thread
/// probes (1024², r = 36, 512-row blocks) one call over all 1024 columns ran at 65–73 GFLOP/s, 192-column chunks
/// at 85–124.
fn accumulate_grads_a<T: Real>(
    da: &mut [Array2<T>],
    pairs: &[Pair<'_, T>],
    bufs: &[Array2<T>],
    blocks: &[Range<usize>],
    threads: usize,
) {
    let Some(n) = da.first().map(|d| d.ncols()) else {
        return;
    };
    // At least 64 columns a span, so a thread's share is not all call overhead.
    let spans = threads.clamp(1, n.div_ceil(64).max(1));
    let width = n.div_ceil(spans).next_multiple_of(16).max(1);
    let spans = column_pieces(n, width);
    let lens: Vec<usize> = spans.iter().map(|c| c.len()).collect();
    let per_span = cut(da.iter_mut().map(|d| d.view_mut()), Axis(1), &lens);
    let jobs: Vec<_> = spans.iter().map(|c| c.start).zip(per_span).collect();
    let g0 = blocks.first().map_or(0, |b| b.start);
    split_map(jobs, threads, |(c0, spans)| {
        for ((d, buf), p) in spans.into_iter().zip(bufs).zip(pairs) {
            add_block_terms(d, c0, p, buf.view(), blocks, g0 == 0);
        }
    });
}

/// `dst` (columns `c0..` of ∂A_i) (+)= Σ B_i[rows]ᵀ·C_i[rows] over `blocks` in order, [`CHUNK`] columns at a time;
/// `c` holds C_i's rows from the first block's, and the first block overwrites `dst` when `overwrite`.
fn add_block_terms<T: Real>(
    mut dst: ArrayViewMut2<'_, T>,
    c0: usize,
    p: &Pair<'_, T>,
    c: ArrayView2<'_, T>,
    blocks: &[Range<usize>],
    overwrite: bool,
) {
    let first = blocks.first().map_or(0, |b| b.start);
    for chunk in column_pieces(dst.ncols(), CHUNK) {
        let cols = c0 + chunk.start..c0 + chunk.end;
        let mut dk = dst.slice_mut(s![.., chunk]);
        for (k, rows) in blocks.iter().enumerate() {
            let bt = p.b.slice(s![rows.clone(), ..]).reversed_axes();
            let ck = c.slice(s![rows.start - first..rows.end - first, cols.clone()]);
            let onto = k > 0 || !overwrite;
            if onto && rows.len() == 1 && bt.nrows() >= 2 {
                // faer's GEMM adds a depth block of one row as its rounded products, but a product of depth 1
                // added onto a destination goes into it by FMA: the term apart, then added.
                let mut term = Array2::zeros(dk.raw_dim());
                gemm_into_seq(term.view_mut(), false, bt, ck, T::one());
                dk += &term;
            } else {
                gemm_into_seq(dk.view_mut(), onto, bt, ck, T::one());
            }
        }
    }
}

/// `0..n` cut into consecutive pieces of `width` columns, a last piece of one column joined to the one before:
/// faer sums a single output column by another path than a wider one, so a column's bits would follow where the
/// cuts fall (and so the thread count).
fn column_pieces(n: usize, width: usize) -> Vec<Range<usize>> {
    pieces(n, width, 2)
}

/// `0..len` cut into consecutive pieces of `width` from 0, a last piece shorter than `min_last` joined to the one
/// before it.
pub(crate) fn pieces(len: usize, width: usize, min_last: usize) -> Vec<Range<usize>> {
    let width = width.max(1);
    let mut pieces: Vec<Range<usize>> = (0..len)
        .step_by(width)
        .map(|c| c..(c + width).min(len))
        .collect();
    if pieces.len() >= 2 && pieces.last().is_some_and(|p| p.len() < min_last) {
        let last = pieces.pop().expect("two pieces");
        pieces.last_mut().expect("one piece").end = last.end;
    }
    pieces
}

/// Columns of ∂A_i one faer call sums: two panels of the f32 micro-kernel's 96 rows (of faer's transposed
/// problem); 128 left a 32-row panel.
const CHUNK: usize = 192;

/// `f` of every job, in job order, the jobs cut into at most `threads` runs of consecutive jobs (their lengths
/// differ by at most one) that go in parallel. rayon's `with_min_len(len.div_ceil(threads))` cannot do this: it
/// never halves an odd count, so 11 tiles on 2 threads all ran on one.
pub(crate) fn split_map<J: Send, R: Send>(
    jobs: Vec<J>,
    threads: usize,
    f: impl Fn(J) -> R + Sync + Send,
) -> Vec<R> {
    let parts = threads.min(jobs.len());
    if parts <= 1 {
        return jobs.into_iter().map(f).collect();
    }
    let (each, extra) = (jobs.len() / parts, jobs.len() % parts);
    let mut jobs = jobs.into_iter();
    let runs: Vec<Vec<J>> = (0..parts)
        .map(|p| jobs.by_ref().take(each + usize::from(p < extra)).collect())
        .collect();
    runs.into_par_iter()
        .map(|run| run.into_iter().map(&f).collect::<Vec<R>>())
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect()
}

/// Defines a row kernel — non-generic, or generic over one `T` bounded by a single trait named by one identifier
/// (`T: Real`, `T: Elem`) — compiled three times (AVX-512, AVX2, baseline) and picked at run time by what the CPU
/// has, so its loops vectorise as wide as the machine allows. IEEE operations round the same
/// at any vector width and Rust never fuses a multiply and an add, so the three give the same bits.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<T: $bound:ident>($($a:ident: $t:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name<T: $bound>($($a: $t),*) $(-> $ret)? {
            #[inline(always)]
            fn imp<T: $bound>($($a: $t),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512<T: $bound>($($a: $t),*) $(-> $ret)? {
                    imp($($a),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2<T: $bound>($($a: $t),*) $(-> $ret)? {
                    imp($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($a),*) };
                }
            }
            imp($($a),*)
        }
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($a: $t),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($a: $t),*) $(-> $ret)? {
                    imp($($a),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($a: $t),*) $(-> $ret)? {
                    imp($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($a),*) };
                }
            }
            imp($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// Running sums of a row's squared residual: eight interleaved f64 accumulators (so the loop is not one long
/// dependency chain), folded in a fixed order.
pub(crate) const LANES: usize = 8;

#[inline(always)]
pub(crate) fn fold(l: [f64; LANES]) -> f64 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// Contiguous rows of a standard-layout tile.
pub(crate) fn row_slice<'a, T>(v: ArrayView2<'a, T>, i: usize) -> &'a [T] {
    v.index_axis_move(Axis(0), i)
        .to_slice()
        .expect("tiles are standard layout")
}

/// The fused objective ‖ΔW − T‖²/‖T‖² and factor gradients of `fitted`, or `None` for a kind with no fused
/// kernel (full, DoRA, LoKr/KronA, MoRA, KRAdapter, or a chain longer than [`MAX_CHAIN`]).
pub fn objective_and_grads<T: Real>(
    fitted: &Fitted<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    ws: &mut Workspace<T>,
    tiling: Tiling,
    threads: usize,
) -> Option<(f64, Vec<Array2<T>>)> {
    dispatch(fitted, target, target_norm2, true, ws, tiling, threads)
}

/// The fused objective alone (ΔW formed tile by tile with the adapter's own `delta` formula).
pub fn objective<T: Real>(
    fitted: &Fitted<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    ws: &mut Workspace<T>,
    tiling: Tiling,
    threads: usize,
) -> Option<f64> {
    dispatch(fitted, target, target_norm2, false, ws, tiling, threads).map(|(o, _)| o)
}

fn dispatch<T: Real>(
    fitted: &Fitted<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    grads: bool,
    ws: &mut Workspace<T>,
    tiling: Tiling,
    threads: usize,
) -> Option<(f64, Vec<Array2<T>>)> {
    let (sum, g) = match fitted {
        Fitted::Abba(a) => abba::run(a, target, target_norm2, grads, ws, tiling, threads),
        Fitted::Lora(l) => lora::run(l, target, target_norm2, grads, ws, tiling, threads),
        Fitted::Hira(h) => hira::run(h, target, target_norm2, grads, ws, tiling, threads),
        Fitted::Chain(c) if c.pairs.len() <= MAX_CHAIN => {
            chain::run(c, target, target_norm2, grads, ws, tiling, threads)
        }
        Fitted::Chain(_)
        | Fitted::Full(_)
        | Fitted::Dora(_)
        | Fitted::Lokr(_)
        | Fitted::Kradapter(_)
        | Fitted::Mora(_) => return None,
    };
    Some((sum / target_norm2, g))
}

#[cfg(test)]
mod tests {
    use super::split_map;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// Results come back in job order, and an odd job count is really shared: 11 jobs on 2 threads go as runs of
    /// 6 and 5 on two workers. The first run's first job waits (up to 10 s) until the second run has started, which
    /// only another worker can do meanwhile. The `with_min_len` split this replaced ran all 11 on one thread.
    #[test]
    fn split_map_keeps_order_and_shares_an_odd_count() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let second_started = AtomicBool::new(false);
        let out = pool.install(|| {
            split_map((0..11).collect(), 2, |j: usize| {
                if j == 6 {
                    second_started.store(true, Ordering::SeqCst);
                }
                if j == 0 {
                    let start = Instant::now();
                    while !second_started.load(Ordering::SeqCst)
                        && start.elapsed() < Duration::from_secs(10)
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                (j, rayon::current_thread_index())
            })
        });
        let order: Vec<usize> = out.iter().map(|o| o.0).collect();
        assert_eq!(order, (0..11).collect::<Vec<_>>());
        let (first, second) = (out[0].1, out[6].1);
        assert!(out[..6].iter().all(|o| o.1 == first), "{out:?}");
        assert!(out[6..].iter().all(|o| o.1 == second), "{out:?}");
        assert_ne!(first, second, "both runs went to one thread: {out:?}");
    }
}
