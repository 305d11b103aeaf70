//! Reconstruction studies: specs, grid expansion, the runner (parallel, resumable, shardable) and its records.

pub mod record;
