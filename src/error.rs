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

    #[error("unknown {what} '{name}': valid names are {}", valid.join(", "))]
    UnknownName {
        what: &'static str,
        name: String,
        valid: Vec<String>,
    },
}

pub type Result<T, E = AbbaError> = std::result::Result<T, E>;
