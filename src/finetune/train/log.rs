//! The per-step training log, `train_log.csv`: one line per optimizer step, appended and flushed as it happens,
//! so a killed run loses at most the line being written. On resume, lines past the checkpoint are dropped first
//! so the log never holds a step twice.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{AbbaError, Result};
use crate::io::write_atomic;

pub const HEADER: &str = "step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,elapsed_s";

#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
}

pub struct TrainLog {
    path: PathBuf,
    file: File,
}

fn io(path: &Path, e: std::io::Error) -> AbbaError {
    AbbaError::io(path, e)
}

impl TrainLog {
    /// Opens the log keeping only steps ≤ `keep_through` (0 on a fresh run).
    pub fn open(path: &Path, keep_through: usize) -> Result<Self> {
        let kept: Vec<String> = read_rows(path)?
            .into_iter()
            .filter(|r| r.step <= keep_through)
            .map(|r| format_row(&r))
            .collect();
        let mut text = format!("{HEADER}\n");
        for line in kept {
            text.push_str(&line);
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        Ok(TrainLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn append(&mut self, row: &LogRow) -> Result<()> {
        let line = format!("{}\n", format_row(row));
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| io(&self.path, e))?;
        self.file.flush().map_err(|e| io(&self.path, e))
    }
}

fn format_row(r: &LogRow) -> String {
    format!(
        "{},{:.4},{:.6},{:.6e},{:.4},{},{:.1},{:.3}",
        r.step, r.epoch, r.loss, r.lr, r.grad_norm, r.tokens, r.tokens_per_s, r.elapsed_s
    )
}

/// Complete rows of a log (a torn last line is ignored); a missing file reads as empty.
pub fn read_rows(path: &Path) -> Result<Vec<LogRow>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path, e)),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let usable = if complete {
        lines.len()
    } else {
        lines.len().saturating_sub(1)
    };
    Ok(lines[..usable]
        .iter()
        .filter_map(|l| parse_row(l))
        .collect())
}

fn parse_row(line: &str) -> Option<LogRow> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != 8 {
        return None;
    }
    Some(LogRow {
        step: f[0].parse().ok()?,
        epoch: f[1].parse().ok()?,
        loss: f[2].parse().ok()?,
        lr: f[3].parse().ok()?,
        grad_norm: f[4].parse().ok()?,
        tokens: f[5].parse().ok()?,
        tokens_per_s: f[6].parse().ok()?,
        elapsed_s: f[7].parse().ok()?,
    })
}
