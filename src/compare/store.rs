//! A comparison's `results.csv` (or `results-shard-K-of-N.csv`): grows by whole rows only (one append and a sync
//! per row, through [`crate::io::append`]), so a killed grid leaves at worst a torn last line, cut off when the
//! file is next opened. Merging keeps the first row of each cell.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::record::CellRecord;
use crate::error::{AbbaError, Result};
use crate::io::write_atomic;
use crate::rows::{self, Schema, to_csv};

const SCHEMA: Schema = Schema {
    format: "comparison results CSV",
    doc: "docs/compare.md",
};

/// The header line, from [`CellRecord`]'s field names.
pub fn header() -> Vec<u8> {
    rows::header::<CellRecord>()
}

/// True when `path` starts with a comparison's header (so `abba merge` can tell it from a study's results).
pub fn is_comparison_file(path: &Path) -> bool {
    let head = header();
    std::fs::read(path).is_ok_and(|b| b.starts_with(&head))
}

/// Every complete row of a results file (a missing file has none; a torn last line is not a row).
pub fn read_records(path: &Path) -> Result<Vec<CellRecord>> {
    rows::read(path, SCHEMA)
}

/// An append-only results file.
pub struct CellStore {
    pub csv: PathBuf,
}

impl CellStore {
    /// Opens (creating) `dir/<file_name>`, cutting off a torn last line; returns the finished rows.
    pub fn open(dir: &Path, file_name: &str) -> Result<(CellStore, Vec<CellRecord>)> {
        crate::io::create_dir_all(dir)?;
        let csv = dir.join(file_name);
        match std::fs::read(&csv) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomic(&csv, &header())?,
            Err(e) => return Err(AbbaError::io(&csv, e)),
            Ok(bytes) if bytes.is_empty() => write_atomic(&csv, &header())?,
            Ok(bytes) if !bytes.ends_with(b"\n") => {
                if crate::io::truncate_to_last_line(&csv, &bytes)? == 0 {
                    write_atomic(&csv, &header())?;
                }
            }
            Ok(_) => {}
        }
        let rows = read_records(&csv)?;
        Ok((CellStore { csv }, rows))
    }

    /// Appends one row as a single write, then syncs it.
    pub fn append(&self, record: &CellRecord) -> Result<()> {
        crate::io::append(&self.csv, &to_csv(std::slice::from_ref(record), false))
    }

    /// Drops the rows of `ids` (for `--force`), rewriting the file atomically.
    pub fn remove(&self, ids: &HashSet<String>) -> Result<()> {
        let kept: Vec<CellRecord> = read_records(&self.csv)?
            .into_iter()
            .filter(|r| !ids.contains(&r.cell_id))
            .collect();
        write_rows(&self.csv, &kept)
    }
}

/// Writes `rows` with the header, atomically.
pub fn write_rows(path: &Path, rows: &[CellRecord]) -> Result<()> {
    let mut bytes = header();
    bytes.extend(to_csv(rows, false));
    write_atomic(path, &bytes)
}

/// Joins result files (the shards of one grid) into `out`, one row per cell (the first wins).
/// Returns (rows written, duplicates dropped).
pub fn merge_files(inputs: &[PathBuf], out: &Path) -> Result<(usize, usize)> {
    let (rows, dropped) = rows::merge(
        inputs,
        read_records,
        |r| &r.cell_id,
        ": name the shards' results-shard-*.csv",
    )?;
    write_rows(out, &rows)?;
    Ok((rows.len(), dropped))
}
