//! Key/value cache for generation: each layer keeps the rotated keys and values it has seen, in buffers allocated
//! once for the whole generation and written in place. The rows of a batch may be left-padded to a common width:
//! their padding columns are masked out of attention and their positions count from their first real token, so
//! a padded row is computed as it would be alone.

use candle_core::{Device, Tensor};

use crate::error::{AbbaError, Result};

#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// Per layer: (batch, kv_heads, capacity, head_dim) key and value buffers, allocated on first use.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Columns filled, per layer (each layer writes its part of a step before the next one does).
    filled: Vec<usize>,
    /// Columns to allocate on first use; the buffers grow (doubling) when a step needs more.
    capacity: usize,
    /// Left-padding columns of each row (empty: no row is padded).
    pad: Vec<usize>,
}

/// Per-step attention layout of a batch: rotary positions of each query and which keys each query sees.
#[derive(Clone, Debug)]
pub struct StepLayout {
    /// (batch, seq) positions, row-major: column `c` of row `r` is at position `c − pad[r]` (0 on padding).
    pub positions: Vec<u32>,
    /// Additive mask (0 or −∞), (seq, total) when every row sees the same keys, else (batch, 1, seq, total);
    /// `None` when nothing is masked (a one-token step of unpadded rows without a sliding window).
    pub mask: Option<Tensor>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self::with_capacity(layers, 0)
    }

    /// A cache whose buffers hold `columns` positions before they need to grow.
    pub fn with_capacity(layers: usize, columns: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
            filled: vec![0; layers],
            capacity: columns,
            pad: Vec::new(),
        }
    }

    /// A cache for a batch whose row `r` starts with `pad[r]` padding columns (left padding).
    pub fn left_padded(layers: usize, columns: usize, pad: Vec<usize>) -> Self {
        KvCache {
            pad,
            ..Self::with_capacity(layers, columns)
        }
    }

    /// Stacks single-row caches (all with the same layers, each filled to its own length) into one batch cache,
    /// each row left-padded to the longest, with room for `columns` columns in all.
    pub fn stack_left_padded(rows: &[KvCache], columns: usize) -> Result<Self> {
        let Some(first) = rows.first() else {
            return Ok(KvCache::default());
        };
        let width = rows.iter().map(KvCache::len).max().unwrap_or(0);
        let pad: Vec<usize> = rows.iter().map(|c| width - c.len()).collect();
        let n_layers = first.layers.len();
        let padded = if pad.iter().any(|&p| p > 0) {
            pad.clone()
        } else {
            Vec::new()
        };
        let mut out = KvCache::left_padded(n_layers, columns.max(width), padded);
        for layer in 0..n_layers {
            let mut bufs: Option<(Tensor, Tensor)> = None;
            for (r, row) in rows.iter().enumerate() {
                let (Some(Some((k, v))), 1) = (row.layers.get(layer), row.batch()) else {
                    return Err(AbbaError::InvalidArgument(
                        "stacking needs filled single-row caches with the same layers".into(),
                    ));
                };
                let (_, kv, _, d) = k.dims4()?;
                let (bk, bv) = match &bufs {
                    Some(b) => b,
                    None => bufs.insert((
                        Tensor::zeros((rows.len(), kv, out.capacity, d), k.dtype(), k.device())?,
                        Tensor::zeros((rows.len(), kv, out.capacity, d), v.dtype(), v.device())?,
                    )),
                };
                let len = row.filled[layer];
                bk.narrow(0, r, 1)?
                    .slice_set(&k.narrow(2, 0, len)?.contiguous()?, 2, pad[r])?;
                bv.narrow(0, r, 1)?
                    .slice_set(&v.narrow(2, 0, len)?.contiguous()?, 2, pad[r])?;
            }
            out.layers[layer] = bufs;
            out.filled[layer] = width;
        }
        Ok(out)
    }

    /// Rows of the cached batch (0 before the first step).
    fn batch(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .next()
            .map_or(0, |(k, _)| k.dim(0).unwrap_or(0))
    }

    /// Number of columns already cached (padding included).
    pub fn len(&self) -> usize {
        self.filled.first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Left-padding columns of each row (empty when no row is padded).
    pub fn padding(&self) -> &[usize] {
        &self.pad
    }

    /// Writes this step's (batch, kv_heads, seq, head_dim) keys and values after the cached ones and returns views
    /// of the full history.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, kv, t, d) = k.dims4()?;
        let at = self.filled[layer];
        let need = at + t;
        let have = self.layers[layer]
            .as_ref()
            .map_or(0, |(bk, _)| bk.dim(2).unwrap_or(0));
        if need > have {
            let cap = need.max(self.capacity).max(2 * have);
            let grow = |old: Option<&Tensor>| -> Result<Tensor> {
                let buf = Tensor::zeros((b, kv, cap, d), k.dtype(), k.device())?;
                if let Some(old) = old {
                    buf.slice_set(&old.narrow(2, 0, at)?.contiguous()?, 2, 0)?;
                }
                Ok(buf)
            };
            let old = self.layers[layer].take();
            self.layers[layer] = Some((
                grow(old.as_ref().map(|o| &o.0))?,
                grow(old.as_ref().map(|o| &o.1))?,
            ));
        }
        let Some((bk, bv)) = &self.layers[layer] else {
            unreachable!("allocated above")
        };
        bk.slice_set(&k.contiguous()?, 2, at)?;
        bv.slice_set(&v.contiguous()?, 2, at)?;
        self.filled[layer] = need;
        Ok((bk.narrow(2, 0, need)?, bv.narrow(2, 0, need)?))
    }

    /// Keeps only the rows `rows` (in that order), e.g. when the others have finished generating, and drops the
    /// leading columns that are padding in every kept row.
    pub fn keep_rows(&mut self, rows: &[usize]) -> Result<()> {
        let pad: Vec<usize> = if self.pad.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(|&r| self.pad[r]).collect()
        };
        let drop = pad.iter().copied().min().unwrap_or(0);
        let mut index = None;
        for (layer, entry) in self.layers.iter_mut().enumerate() {
            let Some((k, v)) = entry.take() else {
                continue;
            };
            let index = match &index {
                Some(i) => i,
                None => index.insert(Tensor::from_vec(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    rows.len(),
                    k.device(),
                )?),
            };
            let cap = k.dim(2)?;
            let keep = |t: &Tensor| -> Result<Tensor> {
                let t = t.index_select(index, 0)?;
                Ok(if drop > 0 {
                    t.narrow(2, drop, cap - drop)?.contiguous()?
                } else {
                    t
                })
            };
            *entry = Some((keep(&k)?, keep(&v)?));
            self.filled[layer] -= drop;
        }
        self.capacity = self.capacity.saturating_sub(drop);
        self.pad = if drop == 0 && pad.iter().all(|&p| p == 0) {
            Vec::new()
        } else {
            pad.iter().map(|p| p - drop).collect()
        };
        Ok(())
    }

    /// Positions and mask for a step of `seq` new columns over `batch` rows, with an optional sliding window
    /// (a query at position p sees keys at positions > p − window). A padding query sees only itself, so its row
    /// of the softmax stays finite; nothing reads it.
    pub fn step_layout(
        &self,
        batch: usize,
        seq: usize,
        window: Option<usize>,
        device: &Device,
    ) -> Result<StepLayout> {
        if !self.pad.is_empty() && self.pad.len() != batch {
            return Err(AbbaError::InvalidArgument(format!(
                "the cache is padded for {} rows but the step has {batch}",
                self.pad.len()
            )));
        }
        let start = self.len();
        let total = start + seq;
        let rows = if self.pad.is_empty() { 1 } else { batch };
        let pad_of = |r: usize| self.pad.get(r).copied().unwrap_or(0);
        let mut positions = Vec::with_capacity(batch * seq);
        for r in 0..batch {
            positions.extend((start..total).map(|c| c.saturating_sub(pad_of(r)) as u32));
        }
        let masked = |r: usize, c: usize, j: usize| {
            let p = pad_of(r);
            if c < p {
                return j != c;
            }
            j < p || j > c || window.is_some_and(|w| c >= j + w)
        };
        let any = (0..rows).any(|r| (start..total).any(|c| (0..total).any(|j| masked(r, c, j))));
        let mask = if any {
            let mut m = vec![0f32; rows * seq * total];
            for r in 0..rows {
                for (i, c) in (start..total).enumerate() {
                    let row = &mut m[(r * seq + i) * total..][..total];
                    for (j, x) in row.iter_mut().enumerate() {
                        if masked(r, c, j) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            Some(if self.pad.is_empty() {
                Tensor::from_vec(m, (seq, total), device)?
            } else {
                Tensor::from_vec(m, (batch, 1, seq, total), device)?
            })
        } else {
            None
        };
        Ok(StepLayout { positions, mask })
    }
}
