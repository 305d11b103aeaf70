//! Typed errors of the library. Each message names the problem and, where there is one, the fix.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum AbbaError {
    #[error("rank {rank} is invalid for a {rows}×{cols} matrix: use a rank between 1 and {}", (*rows).min(*cols))]
    InvalidRank {
        rank: usize,
        rows: usize,
        cols: usize,
    },

    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        what: String,
        expected: (usize, usize),
        got: (usize, usize),
    },

    #[error("{what} contains NaN or infinite values: clean or rescale the input")]
    NonFinite { what: &'static str },

    #[error("empty {rows}×{cols} matrix: every dimension must be at least 1")]
    EmptyMatrix { rows: usize, cols: usize },

    #[error("{what} did not converge")]
    NoConvergence { what: String },

    #[error(
        "budget of {params} parameters is too small for {method} on a {rows}×{cols} layer: it needs at least {needed}"
    )]
    InfeasibleBudget {
        method: String,
        params: usize,
        rows: usize,
        cols: usize,
        needed: usize,
    },

    #[error(
        "{method} cannot reach a budget of {target} parameters on a {rows}×{cols} layer (±{tolerance_pct}%): the nearest it reaches are {}; budget it at one of those",
        nearest.iter().map(|(p, label)| format!("{p} ({label})")).collect::<Vec<_>>().join(", ")
    )]
    UnreachableBudget {
        method: String,
        target: usize,
        rows: usize,
        cols: usize,
        tolerance_pct: usize,
        /// (parameters, configuration) of the feasible sizes nearest below and above the target.
        nearest: Vec<(usize, String)>,
    },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("cannot access {path}: {message}")]
    Io { path: String, message: String },

    #[error("{path} is not a usable {format} file: {message}")]
    Format {
        path: String,
        format: &'static str,
        message: String,
    },

    #[error("{path}:{line}: {message}")]
    Data {
        path: String,
        line: usize,
        message: String,
    },

    #[error("unsupported {what}: {message}")]
    Unsupported { what: String, message: String },

    #[error("tensor backend: {0}")]
    Backend(String),

    #[error("unknown {what} '{name}': valid names are {}", valid.join(", "))]
    UnknownName {
        what: &'static str,
        name: String,
        valid: Vec<String>,
    },
}

impl AbbaError {
    /// An I/O failure on `path`, with the operating system's message.
    pub fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        AbbaError::Io {
            path: path.as_ref().display().to_string(),
            message: e.to_string(),
        }
    }

    /// As [`AbbaError::io`], followed by what the user should do about it.
    pub fn io_hint(path: impl AsRef<std::path::Path>, e: std::io::Error, hint: &str) -> Self {
        AbbaError::Io {
            path: path.as_ref().display().to_string(),
            message: format!("{e}: {hint}"),
        }
    }
}

impl From<candle_core::Error> for AbbaError {
    fn from(e: candle_core::Error) -> Self {
        // candle's messages can span lines (backtraces); keep the first so errors stay one line.
        let text = e.to_string();
        AbbaError::Backend(text.lines().next().unwrap_or("unknown error").to_string())
    }
}

pub type Result<T, E = AbbaError> = std::result::Result<T, E>;
