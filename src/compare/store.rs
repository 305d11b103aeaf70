//! A comparison's `results.csv` (or `results-shard-K-of-N.csv`): grows by whole rows only (one append and a sync
//! per row, through [`crate::io::append`]), so a killed grid leaves at worst a torn last line, cut off when the
//! file is next opened. Merging keeps the first row of each cell.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::record::CellRecord;
use crate::error::{AbbaError, Result};
use crate::io::write_atomic;

fn to_csv(rows: &[CellRecord], header: bool) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(Vec::new());
    for row in rows {
        w.serialize(row).expect("records serialise to CSV");
    }
    w.into_inner().expect("writing to memory cannot fail")
}

/// The header line, from [`CellRecord`]'s field names.
pub fn header() -> Vec<u8> {
    let mut bytes = to_csv(&[CellRecord::default()], true);
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    bytes.truncate(end);
    bytes
}

/// True when `path` starts with a comparison's header (so `abba merge` can tell it from a study's results).
pub fn is_comparison_file(path: &Path) -> bool {
    let head = header();
    std::fs::read(path).is_ok_and(|b| b.starts_with(&head))
}

fn format_err(path: &Path, message: String) -> AbbaError {
    AbbaError::Format {
        path: path.display().to_string(),
        format: "comparison results CSV",
        message,
    }
}

/// Every complete row of a results file (a missing file has none; a torn last line is not a row).
pub fn read_records(path: &Path) -> Result<Vec<CellRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AbbaError::io(path, e)),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    if complete.is_empty() {
        return Ok(Vec::new());
    }
    if !complete.as_bytes().starts_with(&header()) {
        return Err(format_err(
            path,
            "its columns differ from this version's (docs/compare.md): write to a new directory"
                .into(),
        ));
    }
    csv::Reader::from_reader(complete.as_bytes())
        .deserialize()
        .map(|r| {
            r.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                format_err(path, format!("line {line}: {e}"))
            })
        })
        .collect()
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
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    let mut dropped = 0;
    for input in inputs {
        if !input.is_file() {
            return Err(AbbaError::Io {
                path: input.display().to_string(),
                message: "no such file: name the shards' results-shard-*.csv".into(),
            });
        }
        for r in read_records(input)? {
            if seen.insert(r.cell_id.clone()) {
                rows.push(r);
            } else {
                dropped += 1;
            }
        }
    }
    write_rows(out, &rows)?;
    Ok((rows.len(), dropped))
}
