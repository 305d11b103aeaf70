//! Writing a suite's rows: serialised structs through `csv`, atomically, echoed to stdout.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

/// `x` rounded to `digits` decimals (CSV cells stay readable; the measurements are not that precise anyway).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Writes `rows` (header from the struct's field names) to `path` atomically and prints them.
pub fn write<R: Serialize>(path: &Path, rows: &[R]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    let bytes = w.into_inner()?;
    crate::io::write_atomic(path, &bytes)?;
    print!("{}", String::from_utf8_lossy(&bytes));
    println!("wrote {}", path.display());
    Ok(())
}
