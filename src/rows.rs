//! Results files that grow by whole rows (a study's runs, a comparison's cells): rows serialised by serde, the
//! header derived from the record type, reading that drops a torn last line, and merging shards keeping the first
//! row of each id. The stores in `study/` and `compare/` differ only in their record type and wording.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{AbbaError, Result};

/// How a results file names itself in errors.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// The format's name in errors (`results CSV`).
    pub format: &'static str,
    /// Where its columns are documented (`docs/records.md`).
    pub doc: &'static str,
}

impl Schema {
    fn error(&self, path: &Path, message: String) -> AbbaError {
        AbbaError::Format {
            path: path.display().to_string(),
            format: self.format,
            message,
        }
    }

    /// A CSV error with its line, where the reader knows it.
    pub fn csv_error(&self, path: &Path, e: csv::Error) -> AbbaError {
        let line = e
            .position()
            .map_or(String::new(), |p| format!("line {}: ", p.line()));
        self.error(path, format!("{line}{e}"))
    }
}

/// `rows` as CSV bytes, with the header line or without.
pub fn to_csv<S: Serialize>(rows: &[S], header: bool) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(Vec::new());
    for row in rows {
        w.serialize(row).expect("records serialise to CSV");
    }
    w.into_inner().expect("writing to memory cannot fail")
}

/// The header line of a file of `R` rows: serde's field names, in order.
pub fn header<R: Serialize + Default>() -> Vec<u8> {
    let mut bytes = to_csv(&[R::default()], true);
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    bytes.truncate(end);
    bytes
}

/// Every complete row of a results file: a missing or empty file has none, a torn last line (an interrupted
/// append) is not a row, and a header other than `R`'s is refused.
pub fn read<R: Serialize + Default + DeserializeOwned>(
    path: &Path,
    schema: Schema,
) -> Result<Vec<R>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AbbaError::io(path, e)),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    if complete.is_empty() {
        return Ok(Vec::new());
    }
    if !complete.as_bytes().starts_with(&header::<R>()) {
        return Err(schema.error(
            path,
            format!(
                "its columns differ from this version's schema ({}): write to a new directory",
                schema.doc
            ),
        ));
    }
    csv::Reader::from_reader(complete.as_bytes())
        .deserialize()
        .map(|r| r.map_err(|e| schema.csv_error(path, e)))
        .collect()
}

/// The rows of `inputs` (shards of one grid), the first of each `id` kept; also how many were dropped. A missing
/// input is an error whose message ends with `hint`.
pub fn merge<R>(
    inputs: &[PathBuf],
    read: impl Fn(&Path) -> Result<Vec<R>>,
    id: impl Fn(&R) -> &str,
    hint: &str,
) -> Result<(Vec<R>, usize)> {
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    let mut dropped = 0;
    for input in inputs {
        if !input.is_file() {
            return Err(AbbaError::Io {
                path: input.display().to_string(),
                message: format!("no such file{hint}"),
            });
        }
        for r in read(input)? {
            if seen.insert(id(&r).to_string()) {
                rows.push(r);
            } else {
                dropped += 1;
            }
        }
    }
    Ok((rows, dropped))
}
