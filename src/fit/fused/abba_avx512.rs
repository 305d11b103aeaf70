//! ABBA's cofactors straight from its factors, f32 on AVX-512: the products P = B1·A1 and Q = B2·A2 of a tile are
//! formed in registers, 6 rows × 32 columns at a time, and turned into C1 = c·R⊙Q and C2 = c·R⊙P (R = s·P⊙Q − T)
//! before they ever reach memory. The GEMMs and the element-wise pass they replace wrote P and Q to the tile's
//! buffers and read them back. On the bench problem (1024², r1 = r2 = 36) the Adam step ran 3 % faster at 2 threads
//! and 6 % at 1 (five interleaved pairs of runs each, every pair in its favour); allocating the packed factors
//! afresh every step, or packing them element by element, cost all of that.
//!
//! Same bits as that path: each entry of P and Q is faer's sum for a depth below 512 (the terms added in order by
//! FMA onto +0), the cofactors use [`super::abba`]'s formulas in its order of operations, and each row's squared
//! residual goes into eight f64 running sums chunk by chunk from the row's start, as `cofactor_row` adds them.

use std::arch::x86_64::*;

use ndarray::{ArrayView2, ArrayViewMut2};

/// Columns of a register tile (two 16-lane vectors).
const COLS: usize = 32;
/// Rows of a register tile.
const ROWS: usize = 6;

/// Tiles this process formed with the kernel (for the tests, so that they can tell it ran).
pub static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// 64-byte aligned storage for packed panels.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A factor A (r × n) as panels of [`COLS`] columns: panel q holds, for each depth index p, A[p, 32q..32q + 32]
/// (zero past n). Packed once per step, read by every tile.
pub struct PackedFactor {
    lines: Vec<Line>,
    rank: usize,
    cols: usize,
}

impl PackedFactor {
    pub fn new(a: ArrayView2<'_, f32>) -> Self {
        let (rank, cols) = a.dim();
        let panels = cols.div_ceil(COLS);
        let mut lines = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
        lines.clear();
        lines.resize(panels * rank * 2, Line([0.0; 16]));
        {
            // SAFETY: a Line is 16 f32 with no padding.
            let floats: &mut [f32] = unsafe {
                std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16)
            };
            for (p, row) in a.rows().into_iter().enumerate() {
                for (q, chunk) in row.axis_chunks_iter(ndarray::Axis(0), COLS).enumerate() {
                    let slot = &mut floats[(q * rank + p) * COLS..][..chunk.len()];
                    match chunk.as_slice() {
                        Some(c) => slot.copy_from_slice(c),
                        None => slot.iter_mut().zip(chunk).for_each(|(s, &x)| *s = x),
                    }
                }
            }
        }
        PackedFactor { lines, rank, cols }
    }

    fn panel(&self, q: usize) -> *const f32 {
        self.lines[q * self.rank * 2..].as_ptr().cast()
    }
}

thread_local! {
    /// Buffers of dropped packed factors, reused by the next step's (a fresh 147 KiB allocation per factor and step
    /// went to the kernel and came back zeroed, page by page).
    static SPARE: std::cell::RefCell<Vec<Vec<Line>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for PackedFactor {
    fn drop(&mut self) {
        let lines = std::mem::take(&mut self.lines);
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 4 {
                s.push(lines);
            }
        });
    }
}

/// The scalars of the cofactor formulas: s (ABBA's scale) and c = 2s/‖T‖².
#[derive(Clone, Copy)]
pub struct Scalars {
    pub s: f32,
    pub c: f32,
}

/// C1 and C2 of the tile's rows into `c1` and `c2` (rows × n, unit column stride), each row's Σ R² into `sums`.
/// `b1`, `b2` are the tile's rows of B1 and B2, `t` of the target.
///
/// # Panics
/// When the shapes disagree or a view's rows are not contiguous; call only when [`available`].
pub fn cofactor_tile(
    (b1, a1): (ArrayView2<'_, f32>, &PackedFactor),
    (b2, a2): (ArrayView2<'_, f32>, &PackedFactor),
    t: ArrayView2<'_, f32>,
    k: Scalars,
    (mut c1, mut c2): (ArrayViewMut2<'_, f32>, ArrayViewMut2<'_, f32>),
    sums: &mut [f64],
) {
    let (rows, n) = t.dim();
    assert!(available(), "cofactor_tile needs AVX-512");
    assert!(
        b1.nrows() == rows && b2.nrows() == rows && sums.len() == rows,
        "cofactor_tile: tile rows differ"
    );
    assert!(
        b1.ncols() == a1.rank && b2.ncols() == a2.rank && a1.cols == n && a2.cols == n,
        "cofactor_tile: factor shapes differ"
    );
    assert!(
        c1.dim() == (rows, n) && c2.dim() == (rows, n),
        "cofactor_tile: outputs differ"
    );
    let unit = |s: &[isize], len: usize| len <= 1 || s[1] == 1;
    assert!(
        unit(t.strides(), n)
            && unit(c1.strides(), n)
            && unit(c2.strides(), n)
            && unit(b1.strides(), a1.rank)
            && unit(b2.strides(), a2.rank),
        "cofactor_tile: rows must be contiguous"
    );
    TILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for i0 in (0..rows).step_by(ROWS) {
        let h = ROWS.min(rows - i0);
        let view = |b: &ArrayView2<'_, f32>, u: usize| b.row(i0 + u.min(h - 1)).as_ptr();
        let rows_b1: [*const f32; ROWS] = std::array::from_fn(|u| view(&b1, u));
        let rows_b2: [*const f32; ROWS] = std::array::from_fn(|u| view(&b2, u));
        let out =
            |v: &mut ArrayViewMut2<'_, f32>, u: usize| v.row_mut(i0 + u.min(h - 1)).as_mut_ptr();
        let rows_c1: [*mut f32; ROWS] = std::array::from_fn(|u| out(&mut c1, u));
        let rows_c2: [*mut f32; ROWS] = std::array::from_fn(|u| out(&mut c2, u));
        let rows_t: [*const f32; ROWS] = std::array::from_fn(|u| t.row(i0 + u.min(h - 1)).as_ptr());
        let mut lanes = [[0.0f64; 8]; ROWS];
        for q in 0..n.div_ceil(COLS) {
            let j0 = q * COLS;
            let width = COLS.min(n - j0);
            // SAFETY: the CPU has AVX-512 (asserted); rows i0..i0+h of every view and columns j0..j0+width lie
            // inside them (rows past h repeat the last one and are never written); the panels hold rank steps.
            unsafe {
                register_tile(
                    Factors {
                        b: rows_b1,
                        panel: a1.panel(q),
                        rank: a1.rank,
                    },
                    Factors {
                        b: rows_b2,
                        panel: a2.panel(q),
                        rank: a2.rank,
                    },
                    Tile {
                        t: rows_t.map(|p| p.add(j0)),
                        c1: rows_c1.map(|p| p.add(j0)),
                        c2: rows_c2.map(|p| p.add(j0)),
                        rows: h,
                        width,
                    },
                    k,
                    &mut lanes,
                );
            }
        }
        for (sum, l) in sums[i0..i0 + h].iter_mut().zip(&lanes) {
            *sum = super::fold(*l);
        }
    }
}

/// One factor pair's inputs for a register tile: the rows of B (contiguous) and the packed panel.
struct Factors {
    b: [*const f32; ROWS],
    panel: *const f32,
    rank: usize,
}

/// A register tile's rows of the target and the two outputs (at its first column), its live rows and columns.
struct Tile {
    t: [*const f32; ROWS],
    c1: [*mut f32; ROWS],
    c2: [*mut f32; ROWS],
    rows: usize,
    width: usize,
}

/// P and Q over all depth steps, into 6 × 2 vectors each.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn products(f: &Factors) -> [[__m512; 2]; ROWS] {
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    for p in 0..f.rank {
        // SAFETY: the panel holds `rank` steps of 32 floats; row u of B holds `rank` entries.
        unsafe {
            let a0 = _mm512_load_ps(f.panel.add(p * COLS));
            let a1 = _mm512_load_ps(f.panel.add(p * COLS + 16));
            for (acc, row) in acc.iter_mut().zip(&f.b) {
                let bj = _mm512_set1_ps(*row.add(p));
                acc[0] = _mm512_fmadd_ps(a0, bj, acc[0]);
                acc[1] = _mm512_fmadd_ps(a1, bj, acc[1]);
            }
        }
    }
    acc
}

/// [`products`] of two pairs of the same rank in one loop (24 independent sums in flight).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn both_products(f1: &Factors, f2: &Factors) -> ([[__m512; 2]; ROWS], [[__m512; 2]; ROWS]) {
    let mut p = [[_mm512_setzero_ps(); 2]; ROWS];
    let mut q = [[_mm512_setzero_ps(); 2]; ROWS];
    for k in 0..f1.rank {
        // SAFETY: as in `products`, for both pairs.
        unsafe {
            let a0 = _mm512_load_ps(f1.panel.add(k * COLS));
            let a1 = _mm512_load_ps(f1.panel.add(k * COLS + 16));
            let c0 = _mm512_load_ps(f2.panel.add(k * COLS));
            let c1 = _mm512_load_ps(f2.panel.add(k * COLS + 16));
            for u in 0..ROWS {
                let b = _mm512_set1_ps(*f1.b[u].add(k));
                p[u][0] = _mm512_fmadd_ps(a0, b, p[u][0]);
                p[u][1] = _mm512_fmadd_ps(a1, b, p[u][1]);
                let d = _mm512_set1_ps(*f2.b[u].add(k));
                q[u][0] = _mm512_fmadd_ps(c0, d, q[u][0]);
                q[u][1] = _mm512_fmadd_ps(c1, d, q[u][1]);
            }
        }
    }
    (p, q)
}

#[target_feature(enable = "avx512f")]
unsafe fn register_tile(
    f1: Factors,
    f2: Factors,
    tile: Tile,
    k: Scalars,
    lanes: &mut [[f64; 8]; ROWS],
) {
    // SAFETY: forwarded.
    let (p, q) = unsafe {
        if f1.rank == f2.rank {
            both_products(&f1, &f2)
        } else {
            (products(&f1), products(&f2))
        }
    };
    let (vs, vc) = (_mm512_set1_ps(k.s), _mm512_set1_ps(k.c));
    for u in 0..tile.rows {
        // SAFETY: the row's lane sums are a [f64; 8].
        let mut sum = unsafe { _mm512_loadu_pd(lanes[u].as_ptr()) };
        for half in 0..2 {
            let live = tile.width.saturating_sub(16 * half).min(16);
            if live == 0 {
                break;
            }
            let mask: __mmask16 = if live == 16 { 0xffff } else { (1 << live) - 1 };
            let (pk, qk) = (p[u][half], q[u][half]);
            // SAFETY: columns below `width` of row u lie inside the target and outputs.
            unsafe {
                let t = _mm512_maskz_loadu_ps(mask, tile.t[u].add(16 * half));
                let r = _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(vs, pk), qk), t);
                let rr = _mm512_mul_ps(r, r);
                let g = _mm512_mul_ps(vc, r);
                _mm512_mask_storeu_ps(tile.c1[u].add(16 * half), mask, _mm512_mul_ps(g, qk));
                _mm512_mask_storeu_ps(tile.c2[u].add(16 * half), mask, _mm512_mul_ps(g, pk));
                // Two chunks of eight, each added onto the eight running sums (only its live entries).
                let low = _mm512_cvtps_pd(_mm512_castps512_ps256(rr));
                let high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                    _mm512_castps_pd(rr),
                )));
                sum = _mm512_mask_add_pd(sum, mask as __mmask8, sum, low);
                sum = _mm512_mask_add_pd(sum, (mask >> 8) as __mmask8, sum, high);
            }
        }
        // SAFETY: as above.
        unsafe { _mm512_storeu_pd(lanes[u].as_mut_ptr(), sum) };
    }
}
