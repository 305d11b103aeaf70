//! Where results live. `results.csv` only ever grows by whole rows: each row is one `write` on a file opened for
//! appending, followed by `fsync`, so a killed sweep leaves at worst a torn last line, which the next open cuts
//! off. Per-run curve and spectrum files are written to a temporary name and renamed into place.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::record::{CurvePoint, RunRecord, SpectrumPoint};
use crate::error::{AbbaError, Result};
use crate::io::write_atomic;

fn to_csv<S: Serialize>(rows: &[S], header: bool) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(Vec::new());
    for row in rows {
        w.serialize(row).expect("records serialise to CSV");
    }
    w.into_inner().expect("writing to memory cannot fail")
}

/// The header line of `results.csv`: serde's field names of [`RunRecord`], in order.
fn header() -> Vec<u8> {
    let mut bytes = to_csv(&[RunRecord::default()], true);
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    bytes.truncate(end);
    bytes
}

/// Column names of `results.csv`, in order (from [`RunRecord`]'s fields).
pub fn header_fields() -> Vec<String> {
    String::from_utf8_lossy(&header())
        .trim_end()
        .split(',')
        .map(String::from)
        .collect()
}

/// Reads every complete record of a results file (missing file = none).
pub fn read_records(path: &Path) -> Result<Vec<RunRecord>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AbbaError::io(path, e)),
    };
    // A torn last line (no newline) is an interrupted append: not a record.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(complete.as_bytes());
    let fields: Vec<String> = reader
        .headers()
        .map_err(|e| csv_err(path, e))?
        .iter()
        .map(String::from)
        .collect();
    if !fields.is_empty() && fields != header_fields() {
        return Err(AbbaError::Format {
            path: path.display().to_string(),
            format: "results CSV",
            message: "its columns differ from this version's schema (docs/records.md): write to a new directory".into(),
        });
    }
    reader
        .deserialize()
        .map(|r| r.map_err(|e| csv_err(path, e)))
        .collect()
}

fn csv_err(path: &Path, e: csv::Error) -> AbbaError {
    let line = e
        .position()
        .map_or(String::new(), |p| format!("line {}: ", p.line()));
    AbbaError::Format {
        path: path.display().to_string(),
        format: "results CSV",
        message: format!("{line}{e}"),
    }
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
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    let mut dropped = 0;
    for input in inputs {
        if !input.exists() {
            return Err(AbbaError::Io {
                path: input.display().to_string(),
                message: "no such file".into(),
            });
        }
        for r in read_records(input)? {
            if seen.insert(r.run_id.clone()) {
                rows.push(r)
            } else {
                dropped += 1
            }
        }
    }
    let mut bytes = header();
    bytes.extend(to_csv(&rows, false));
    write_atomic(out, &bytes)?;
    Ok((rows.len(), dropped))
}
