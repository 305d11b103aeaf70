//! An f32 matrix product for AVX-512 CPUs that gives faer's bits, faster on large products.
//!
//! faer 0.24 sends f32 products to `private-gemm-x86`, whose AVX-512 register tile is 96×4: six vectors of the
//! left operand stream from L2 for every four broadcasts, and on this project's machines it ran 1.3–1.5× slower
//! per core than MKL. This kernel uses the BLIS layout instead (a 32×12 register tile over packed panels: two
//! vectors and twelve broadcasts feed 24 FMAs per step) while keeping faer's order of operations for every entry,
//! so that every number the project computes stays what it was:
//! - the inner dimension is walked in blocks of [`KC`] = 512 from index 0;
//! - within a block the terms are added in order, by FMA, onto an accumulator that starts at +0;
//! - each block's sum is multiplied by alpha, then stored (the first block when not accumulating) or added to the
//!   destination.
//!
//! Each entry is computed by one thread, so the bits do not depend on the number of threads either.

use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of the register tile (two 16-lane vectors).
const MR: usize = 32;
/// Columns of the register tile.
const NR: usize = 12;
/// Depth of one block of the inner dimension: faer's, which fixes the order of the sums.
const KC: usize = 512;
/// Rows of the left operand packed at once (kept in L2: 256 × 512 × 4 B = 512 KiB).
const MC: usize = 256;
/// Columns of the right operand packed at once (3 MiB at full depth).
const NC: usize = 1536;
/// Steps ahead the left panel is prefetched.
const PREFETCH_STEPS: usize = 8;

/// A strided f32 matrix, read-only.
#[derive(Clone, Copy)]
pub struct Operand {
    pub ptr: *const f32,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// The destination: `rows × cols` f32 with the given strides, one of which is 1.
#[derive(Clone, Copy)]
pub struct Destination {
    pub ptr: *mut f32,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

// SAFETY: the pointers are only read (operands) or written at disjoint entries by disjoint threads (destination
// bands); the caller of `product` guarantees they are valid for the call.
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}
unsafe impl Send for Destination {}
unsafe impl Sync for Destination {}

impl Operand {
    fn transposed(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
    /// Rows `start..start + len`.
    unsafe fn rows_from(self, start: usize, len: usize) -> Self {
        Self {
            ptr: unsafe { self.ptr.offset(start as isize * self.row_stride) },
            rows: len,
            ..self
        }
    }
    /// Columns `start..start + len`.
    unsafe fn cols_from(self, start: usize, len: usize) -> Self {
        Self {
            ptr: unsafe { self.ptr.offset(start as isize * self.col_stride) },
            cols: len,
            ..self
        }
    }
    unsafe fn at(&self, i: usize, j: usize) -> *const f32 {
        unsafe {
            self.ptr
                .offset(i as isize * self.row_stride + j as isize * self.col_stride)
        }
    }
}

/// Products this process ran through the kernel (for the test that compares it with faer, so that it can tell it
/// compared something).
pub static PRODUCTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// `dst = alpha·a·b (+ dst if accumulate)` on up to `threads` threads, with faer's bits.
///
/// # Safety
/// The operands must be valid for reads over their shapes and strides, the destination for reads and writes, the
/// destination must not overlap an operand, and [`available`] must be true. Shapes must agree
/// (`a.cols == b.rows`, `dst` is `a.rows × b.cols`), strides must be non-negative, and one destination stride must
/// be 1.
pub unsafe fn product(
    dst: Destination,
    accumulate: bool,
    a: Operand,
    b: Operand,
    alpha: f32,
    threads: usize,
) {
    debug_assert!(a.cols == b.rows && dst.rows == a.rows && dst.cols == b.cols);
    PRODUCTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The kernel writes columns of 32 contiguous rows; a row-major destination is the transposed problem
    // (dstᵀ = bᵀ·aᵀ), which sums every entry's terms in the same order.
    let (dst, a, b) = if dst.row_stride == 1 {
        (dst, a, b)
    } else {
        let t = Destination {
            rows: dst.cols,
            cols: dst.rows,
            row_stride: dst.col_stride,
            col_stride: dst.row_stride,
            ..dst
        };
        (t, b.transposed(), a.transposed())
    };
    debug_assert_eq!(dst.row_stride, 1);
    let threads = threads.max(1);
    if threads == 1 {
        // SAFETY: forwarded from the caller.
        unsafe { band(dst, accumulate, a, b, alpha) };
        return;
    }
    // Disjoint bands of the longer side of the output, each a whole number of tiles.
    let by_rows = dst.rows >= dst.cols;
    let (len, unit) = if by_rows {
        (dst.rows, MR)
    } else {
        (dst.cols, NR)
    };
    let tiles = len.div_ceil(unit);
    let per = tiles.div_ceil(threads) * unit;
    let starts: Vec<usize> = (0..len).step_by(per).collect();
    let run = |start: usize| {
        // Whole structs move in (a closure would otherwise capture the bare, unsendable pointers).
        let (dst, a, b) = (dst, a, b);
        let size = per.min(len - start);
        // SAFETY: the bands are disjoint parts of a destination the caller lent us whole.
        unsafe {
            if by_rows {
                let d = Destination {
                    ptr: dst.ptr.add(start),
                    rows: size,
                    ..dst
                };
                band(d, accumulate, a.rows_from(start, size), b, alpha)
            } else {
                let d = Destination {
                    ptr: dst.ptr.offset(start as isize * dst.col_stride),
                    cols: size,
                    ..dst
                };
                band(d, accumulate, a, b.cols_from(start, size), alpha)
            }
        }
    };
    in_parallel(&starts, &run);
}

/// Runs `run` on every start, halving the list with `rayon::join`.
fn in_parallel(starts: &[usize], run: &(impl Fn(usize) + Sync)) {
    match starts {
        [] => {}
        [one] => run(*one),
        _ => {
            let (left, right) = starts.split_at(starts.len() / 2);
            rayon::join(|| in_parallel(left, run), || in_parallel(right, run));
        }
    }
}

/// 64-byte aligned storage for packed panels.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    /// Packed left and right panels, per thread, grown once.
    static PANELS: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn floats(v: &mut Vec<Line>, n: usize) -> &mut [f32] {
    let lines = n.div_ceil(16);
    if v.len() < lines {
        v.resize(lines, Line([0.0; 16]));
    }
    // SAFETY: a Line is 16 f32 with no padding.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), lines * 16) }
}

/// One thread's share: the whole product for its band of the destination.
unsafe fn band(dst: Destination, accumulate: bool, a: Operand, b: Operand, alpha: f32) {
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    PANELS.with(|panels| {
        let mut panels = panels.borrow_mut();
        let (left, right) = &mut *panels;
        // A left operand with contiguous columns is read where it lies when few right columns would reuse each
        // packed panel: packing the fused fit's ∂A blocks (192×512, 36 right columns) cost half as much as their
        // tiles, and reading them in place made the 1024², r = 36 Adam step 1–5 % faster (interleaved runs).
        let direct_left = a.row_stride == 1 && n <= DIRECT_LEFT_MAX_COLS;
        let left_len = if direct_left {
            0
        } else {
            MC.min(m.next_multiple_of(MR)) * KC.min(k)
        };
        let left = floats(left, left_len);
        // Columns of `b` that are contiguous are read where they lie: packing them would be a transpose, a scalar
        // gather that cost as much as the tile's work when the output's other side is short.
        let direct = b.row_stride == 1 && b.col_stride != 1;
        let right_len = if direct {
            0
        } else {
            NC.min(n.next_multiple_of(NR)) * KC.min(k)
        };
        let right = floats(right, right_len);
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let replace = pc == 0 && !accumulate;
                // SAFETY: all indices below stay inside the shapes the caller vouched for.
                unsafe {
                    if !direct {
                        pack_right(right, b, pc, kc, jc, nc);
                    }
                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);
                        if !direct_left {
                            pack_left(left, a, ic, mc, pc, kc);
                        }
                        for jr in (0..nc).step_by(NR) {
                            let nr = NR.min(nc - jr);
                            for ir in (0..mc).step_by(MR) {
                                let mr = MR.min(mc - ir);
                                let c = dst.ptr.offset(
                                    (ic + ir) as isize + (jc + jr) as isize * dst.col_stride,
                                );
                                let l = if direct_left {
                                    Left {
                                        ptr: a.at(ic + ir, pc),
                                        step: a.col_stride as usize,
                                        direct: true,
                                    }
                                } else {
                                    Left {
                                        ptr: left.as_ptr().add(ir * kc),
                                        step: MR,
                                        direct: false,
                                    }
                                };
                                let out = TileOut {
                                    c,
                                    ldc: dst.col_stride,
                                    mr,
                                    nr,
                                    alpha,
                                    replace,
                                };
                                if direct {
                                    // Columns past the end read the last one again; they are never written.
                                    let cols =
                                        std::array::from_fn(|j| b.at(pc, jc + jr + j.min(nr - 1)));
                                    tile::<1>(kc, l, &cols, out);
                                } else {
                                    let packed = right.as_ptr().add(jr * kc);
                                    tile::<NR>(kc, l, &std::array::from_fn(|j| packed.add(j)), out);
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Rows `i0..i0+mc`, depth `p0..p0+kc` of `a` as panels of [`MR`] rows: panel q holds, for each depth index, its
/// 32 rows contiguous (rows past the end are zero).
unsafe fn pack_left(dst: &mut [f32], a: Operand, i0: usize, mc: usize, p0: usize, kc: usize) {
    if a.row_stride == 1 {
        // SAFETY: as below; a column of the block is mc contiguous floats.
        unsafe { pack_left_columns(dst, a, i0, mc, p0, kc) };
        return;
    }
    if a.row_stride
        .checked_mul(MR as isize)
        .is_some_and(|span| span <= i32::MAX as isize)
    {
        // SAFETY: as below; the rows' offsets fit the gather's 32-bit indices.
        unsafe { pack_left_gathered(dst, a, i0, mc, p0, kc) };
        return;
    }
    for ir in (0..mc).step_by(MR) {
        let mr = MR.min(mc - ir);
        let panel = &mut dst[ir * kc..(ir + MR) * kc];
        // SAFETY: (i0 + ir + i, p0 + p) lies inside `a` for i < mr, p < kc.
        unsafe {
            for i in 0..mr {
                let src = a.at(i0 + ir + i, p0);
                for p in 0..kc {
                    panel[p * MR + i] = *src.offset(p as isize * a.col_stride);
                }
            }
        }
        for p in 0..kc {
            panel[p * MR + mr..(p + 1) * MR].fill(0.0);
        }
    }
}

/// [`pack_left`] for a block whose rows are far apart: each depth index's 32 rows in two gathers (a scalar loop
/// stored one float at a time and cost as much as a tile's work on products with 256 rows).
#[target_feature(enable = "avx512f")]
unsafe fn pack_left_gathered(
    dst: &mut [f32],
    a: Operand,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
) {
    let rows = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(a.row_stride as i32),
    );
    let out = dst.as_mut_ptr();
    for ir in (0..mc).step_by(MR) {
        let (low, high) = row_masks(mc - ir);
        // SAFETY: rows i0+ir.. (masked to those inside the block) at depth p0+p lie inside `a`.
        unsafe {
            let top = a.at(i0 + ir, p0);
            let bottom = top.wrapping_offset(16 * a.row_stride);
            for p in 0..kc {
                let at = p as isize * a.col_stride;
                let slot = out.add(ir * kc + p * MR);
                let zero = _mm512_setzero_ps();
                let v0 = _mm512_mask_i32gather_ps::<4>(zero, low, rows, top.offset(at).cast());
                let v1 = _mm512_mask_i32gather_ps::<4>(
                    zero,
                    high,
                    rows,
                    bottom.wrapping_offset(at).cast(),
                );
                _mm512_store_ps(slot, v0);
                _mm512_store_ps(slot.add(16), v1);
            }
        }
    }
}

/// Lane masks for the first `rows` of a 32-row tile, as (rows 0–15, rows 16–31).
fn row_masks(rows: usize) -> (__mmask16, __mmask16) {
    let low = if rows >= 16 {
        0xffff
    } else {
        (1u16 << rows) - 1
    };
    let high = if rows >= MR {
        0xffff
    } else if rows <= 16 {
        0
    } else {
        (1u16 << (rows - 16)) - 1
    };
    (low, high)
}

/// [`pack_left`] for a column-major block: each column is read once, front to back (reading a panel's 32 rows of
/// every column in turn would touch one page per column and stall on the TLB).
#[target_feature(enable = "avx512f")]
unsafe fn pack_left_columns(
    dst: &mut [f32],
    a: Operand,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
) {
    let out = dst.as_mut_ptr();
    for p in 0..kc {
        // SAFETY: rows i0..i0+mc of column p0+p lie inside `a`; panel q's slot for p is dst[(q·kc + p)·MR..][..MR].
        unsafe {
            let src = a.at(i0, p0 + p);
            for ir in (0..mc).step_by(MR) {
                let slot = out.add(ir * kc + p * MR);
                let (low, high) = row_masks(mc - ir);
                _mm512_store_ps(slot, _mm512_maskz_loadu_ps(low, src.add(ir)));
                _mm512_store_ps(
                    slot.add(16),
                    _mm512_maskz_loadu_ps(high, src.wrapping_add(ir + 16)),
                );
            }
        }
    }
}

/// The most right columns (of a band) for which a left operand with contiguous columns is read in place rather
/// than packed: each packed panel would serve at most four 12-column tiles.
const DIRECT_LEFT_MAX_COLS: usize = 4 * NR;

/// Where a tile reads the left operand: depth index p's 32 rows start at `ptr + p·step`. A packed panel
/// (`direct` false) holds zeros past the last row; an operand read in place (`direct`) is loaded under the row
/// masks instead.
#[derive(Clone, Copy)]
struct Left {
    ptr: *const f32,
    step: usize,
    direct: bool,
}

/// Depth `p0..p0+kc`, columns `j0..j0+nc` of `b` as panels of [`NR`] columns: panel q holds, for each depth index,
/// its 12 columns contiguous (columns past the end are zero).
unsafe fn pack_right(dst: &mut [f32], b: Operand, p0: usize, kc: usize, j0: usize, nc: usize) {
    for jr in (0..nc).step_by(NR) {
        let nr = NR.min(nc - jr);
        let panel = &mut dst[jr * kc..(jr + NR) * kc];
        // SAFETY: (p0 + p, j0 + jr + j) lies inside `b` for p < kc, j < nr.
        unsafe {
            if b.col_stride == 1 {
                for p in 0..kc {
                    let src = b.at(p0 + p, j0 + jr);
                    let out = &mut panel[p * NR..(p + 1) * NR];
                    std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), nr);
                    out[nr..].fill(0.0);
                }
            } else {
                for j in 0..nr {
                    let src = b.at(p0, j0 + jr + j);
                    for p in 0..kc {
                        panel[p * NR + j] = *src.offset(p as isize * b.row_stride);
                    }
                }
                for p in 0..kc {
                    panel[p * NR + nr..(p + 1) * NR].fill(0.0);
                }
            }
        }
    }
}

/// Where one 32×12 tile of the destination goes: its top-left entry at `c`, columns `ldc` apart; only the first
/// `mr` rows and `nr` columns are written, the block's sums times `alpha`, stored (`replace`) or added.
#[derive(Clone, Copy)]
struct TileOut {
    c: *mut f32,
    ldc: isize,
    mr: usize,
    nr: usize,
    alpha: f32,
    replace: bool,
}

/// One 32×12 tile over one depth block of `kc` steps: the left operand as [`Left`] says, the right operand's column
/// j with its depth index p at `right[j] + p·STEP` (a packed panel: STEP = [`NR`]).
#[target_feature(enable = "avx512f")]
unsafe fn tile<const STEP: usize>(kc: usize, left: Left, right: &[*const f32; NR], out: TileOut) {
    if left.direct {
        // SAFETY: forwarded.
        unsafe { tile_steps::<STEP, true>(kc, left, right, out) }
    } else {
        // SAFETY: forwarded.
        unsafe { tile_steps::<STEP, false>(kc, left, right, out) }
    }
}

/// [`tile`] with the left operand's kind fixed at compile time, so that the packed path keeps its aligned loads.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_steps<const STEP: usize, const DIRECT: bool>(
    kc: usize,
    left: Left,
    right: &[*const f32; NR],
    out: TileOut,
) {
    let TileOut {
        c,
        ldc,
        mr,
        nr,
        alpha,
        replace,
    } = out;
    let (low, high) = row_masks(mr);
    let mut acc = [[_mm512_setzero_ps(); 2]; NR];
    for p in 0..kc {
        // SAFETY: the left operand holds kc steps of `mr` rows (a packed panel: of MR, zero past mr) and the right
        // one kc steps of NR columns; masked lanes are not read; a prefetch past the end cannot fault.
        unsafe {
            let l = left.ptr.add(p * left.step);
            let ahead = l.wrapping_add(PREFETCH_STEPS * left.step);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
            let (a0, a1) = if DIRECT {
                (
                    _mm512_maskz_loadu_ps(low, l),
                    _mm512_maskz_loadu_ps(high, l.wrapping_add(16)),
                )
            } else {
                (_mm512_load_ps(l), _mm512_load_ps(l.add(16)))
            };
            for (acc, col) in acc.iter_mut().zip(right) {
                let bj = _mm512_set1_ps(*col.add(p * STEP));
                acc[0] = _mm512_fmadd_ps(a0, bj, acc[0]);
                acc[1] = _mm512_fmadd_ps(a1, bj, acc[1]);
            }
        }
    }
    let va = _mm512_set1_ps(alpha);
    for (j, acc) in acc.iter().enumerate().take(nr) {
        // SAFETY: column j < nr and rows < mr of the tile lie inside the destination; masked lanes are not touched.
        unsafe {
            let col = c.offset(j as isize * ldc);
            let s0 = _mm512_mul_ps(acc[0], va);
            let s1 = _mm512_mul_ps(acc[1], va);
            if replace {
                _mm512_mask_storeu_ps(col, low, s0);
                _mm512_mask_storeu_ps(col.wrapping_add(16), high, s1);
            } else {
                let d0 = _mm512_maskz_loadu_ps(low, col);
                let d1 = _mm512_maskz_loadu_ps(high, col.wrapping_add(16));
                _mm512_mask_storeu_ps(col, low, _mm512_add_ps(d0, s0));
                _mm512_mask_storeu_ps(col.wrapping_add(16), high, _mm512_add_ps(d1, s1));
            }
        }
    }
}
