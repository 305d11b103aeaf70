//! A blocked out-of-place transpose, for products that run faster into a column-major buffer (see
//! [`super::linear`]): faer then packs the small operand instead of the large one, and this turns the result back
//! into candle's row-major layout.

use rayon::prelude::*;

use super::PAR_MIN_ELEMS;

/// Side of the square blocks: 32 f32 rows of 128 bytes each keep both the rows read and the rows written in L1.
const BLOCK: usize = 32;

/// `dst` (c×r, row-major) = `src`ᵀ for a row-major r×c `src`, split across rayon's pool by blocks of `dst`'s rows
/// when large.
pub(crate) fn transpose_into<T: Copy + Send + Sync>(
    src: &[T],
    (r, c): (usize, usize),
    dst: &mut [T],
) {
    assert_eq!(
        src.len(),
        r * c,
        "transpose: source does not match its shape"
    );
    assert_eq!(
        dst.len(),
        r * c,
        "transpose: destination does not match the shape"
    );
    if r == 0 || c == 0 {
        return;
    }
    // One band = BLOCK rows of dst = BLOCK columns of src.
    let band = |(index, rows): (usize, &mut [T])| {
        let j0 = index * BLOCK;
        let height = rows.len() / r;
        for i0 in (0..r).step_by(BLOCK) {
            let i1 = (i0 + BLOCK).min(r);
            for jj in 0..height {
                let out = &mut rows[jj * r + i0..jj * r + i1];
                for (di, o) in out.iter_mut().enumerate() {
                    *o = src[(i0 + di) * c + j0 + jj];
                }
            }
        }
    };
    if r * c >= PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
        dst.par_chunks_mut(BLOCK * r).enumerate().for_each(band);
    } else {
        dst.chunks_mut(BLOCK * r).enumerate().for_each(band);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_index_definition_on_ragged_and_parallel_shapes() {
        // 5×7 (blocks cut short), 33×65 (one past a block each way), 300×129 (above the parallel floor).
        for (r, c) in [(1, 1), (5, 7), (33, 65), (300, 129), (129, 300)] {
            let src: Vec<u32> = (0..(r * c) as u32).collect();
            let mut dst = vec![u32::MAX; r * c];
            transpose_into(&src, (r, c), &mut dst);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(dst[j * r + i], src[i * c + j], "({i}, {j}) of {r}×{c}");
                }
            }
        }
    }
}
