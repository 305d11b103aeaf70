//! Where results live. `results.csv` only ever grows by whole rows: each row is one `write` on a file opened for
//! appending, followed by `fsync`, so a killed sweep leaves at worst a torn last line, which the next open cuts
//! off. Per-run curve and spectrum files are written to a temporary name and renamed into place.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::record::{CurvePoint, RunRecord, SpectrumPoint};
use crate::error::{AbbaError, Result};
use crate::io::write_atomic;
use crate::rows::{self, Schema, to_csv};

const SCHEMA: Schema = Schema {
    format: "results CSV",
    doc: "docs/records.md",
};

/// The header line of `results.csv`: serde's field names of [`RunRecord`], in order.
fn header() -> Vec<u8> {
    rows::header::<RunRecord>()
}

/// Column names of `results.csv`, in order (from [`RunRecord`]'s fields).
pub fn header_fields() -> Vec<String> {
    String::from_utf8_lossy(&header())
        .trim_end()
        .split(',')
        .map(String::from)
        .collect()
}

/// Reads every complete record of a results file (missing file = none; a torn last line is not a record).
pub fn read_records(path: &Path) -> Result<Vec<RunRecord>> {
    rows::read(path, SCHEMA)
}

fn csv_err(path: &Path, e: csv::Error) -> AbbaError {
    SCHEMA.csv_error(path, e)
}

/// An append-only results file and its per-run artifacts directory.
pub struct ResultsStore {
    pub csv: PathBuf,
    pub runs_dir: PathBuf,
}

impl ResultsStore {
    /// Opens (creating if needed) `dir/<file_name>`, cutting off a torn last line. Returns the finished records.
    pub fn open(dir: &Path, file_name: &str) -> Result<(ResultsStore, Vec<RunRecord>)> {
        fs::create_dir_all(dir).map_err(|e| AbbaError::io(dir, e))?;
        let csv = dir.join(file_name);
        let store = ResultsStore {
            csv: csv.clone(),
            runs_dir: dir.join("runs"),
        };
        match fs::read(&csv) {
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
        let records = read_records(&csv)?;
        Ok((store, records))
    }

    /// Appends one record as a single write, then syncs it to disk.
    pub fn append(&self, record: &RunRecord) -> Result<()> {
        crate::io::append(&self.csv, &to_csv(std::slice::from_ref(record), false))
    }

    /// Drops the rows of `ids` (for `--force`), rewriting the file atomically.
    pub fn remove(&self, ids: &HashSet<String>) -> Result<()> {
        let kept: Vec<RunRecord> = read_records(&self.csv)?
            .into_iter()
            .filter(|r| !ids.contains(&r.run_id))
            .collect();
        let mut bytes = header();
        bytes.extend(to_csv(&kept, false));
        write_atomic(&self.csv, &bytes)
    }

    /// Writes a run's convergence curve and spectra (before its row, so a row always has its files).
    pub fn write_artifacts(
        &self,
        run_id: &str,
        curve: &[CurvePoint],
        spectrum: &[SpectrumPoint],
    ) -> Result<()> {
        let dir = self.runs_dir.join(run_id);
        write_atomic(&dir.join("curve.csv"), &to_csv(curve, true))?;
        if !spectrum.is_empty() {
            write_atomic(&dir.join("spectrum.csv"), &to_csv(spectrum, true))?;
        }
        Ok(())
    }
}

/// Reads a run's curve (empty if it has none); a malformed row is an error naming the file and line.
pub fn read_curve(runs_dir: &Path, run_id: &str) -> Result<Vec<CurvePoint>> {
    read_rows(&runs_dir.join(run_id).join("curve.csv"))
}

/// Reads a run's spectra (empty if it has none); a malformed row is an error naming the file and line.
pub fn read_spectrum(runs_dir: &Path, run_id: &str) -> Result<Vec<SpectrumPoint>> {
    read_rows(&runs_dir.join(run_id).join("spectrum.csv"))
}

fn read_rows<D: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<D>> {
    let mut reader = match csv::Reader::from_path(path) {
        Ok(r) => r,
        Err(e) if matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(csv_err(path, e)),
    };
    reader
        .deserialize()
        .map(|row| row.map_err(|e| csv_err(path, e)))
        .collect()
}

/// Joins result files (e.g. the shards of one study) into `out`, one row per run id; the first occurrence wins.
/// Returns (rows written, duplicates dropped).
pub fn merge_files(inputs: &[PathBuf], out: &Path) -> Result<(usize, usize)> {
    let (rows, dropped) = rows::merge(inputs, read_records, |r| &r.run_id, "")?;
    let mut bytes = header();
    bytes.extend(to_csv(&rows, false));
    write_atomic(out, &bytes)?;
    Ok((rows.len(), dropped))
}
