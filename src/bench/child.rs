//! Measurements that run in a child process, so that each peak-memory figure belongs to one configuration: this
//! executable with the hidden `bench --worker SPEC` flag, or a Python competitor script. Each child prints one JSON
//! object on its last stdout line; the parent adds how busy the other cores were meanwhile.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use crate::process::{CpuSnapshot, other_load};

/// A child's JSON line, and the average number of cores other processes kept busy while it ran.
pub struct Measured<T> {
    pub value: T,
    pub other_load_cores: f64,
}

/// Runs `cmd` and parses the JSON object on the last line of its stdout.
pub fn json_line<T: DeserializeOwned>(mut cmd: Command, what: &str) -> Result<Measured<T>> {
    let before = CpuSnapshot::take();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let other_load_cores = other_load(before, CpuSnapshot::take());
    anyhow::ensure!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let value =
        serde_json::from_str(line).with_context(|| format!("reading {what}'s JSON line"))?;
    Ok(Measured {
        value,
        other_load_cores,
    })
}

/// A Python script written to a temporary file for the duration of one bench run.
pub struct TempScript(PathBuf);

impl TempScript {
    pub fn new(stem: &str, text: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{stem}-{}.py", std::process::id()));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(TempScript(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempScript {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// This executable running `bench --worker SPEC` with `args`, on `threads` threads (candle reads
/// RAYON_NUM_THREADS).
pub fn our_worker<T: DeserializeOwned>(
    spec: &str,
    args: &[String],
    threads: usize,
) -> Result<Measured<T>> {
    let exe = std::env::current_exe().context("locating the abba executable")?;
    let mut cmd = Command::new(exe);
    cmd.env("RAYON_NUM_THREADS", threads.to_string())
        .args(["bench", "--worker", spec, "--threads", &threads.to_string()])
        .args(args);
    json_line(cmd, &format!("abba bench worker {spec}"))
}

/// `python script args… --threads N`.
pub fn python<T: DeserializeOwned>(
    python: &str,
    script: &Path,
    args: &[String],
    threads: usize,
) -> Result<Measured<T>> {
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(args)
        .args(["--threads", &threads.to_string()]);
    json_line(cmd, python)
}

/// `--key value` pairs as arguments.
pub fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
        .collect()
}

/// The competitor's library versions, as the `version` column shows them.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct TorchVersions {
    pub torch: Option<String>,
    pub transformers: Option<String>,
    pub peft: Option<String>,
}

impl TorchVersions {
    pub fn label(&self) -> String {
        let mut s = format!("torch {}", self.torch.as_deref().unwrap_or("?"));
        for (lib, v) in [("transformers", &self.transformers), ("peft", &self.peft)] {
            if let Some(v) = v {
                s.push_str(&format!(" {lib} {v}"));
            }
        }
        s
    }
}

/// Prints why the competitor was skipped; the bench goes on with our rows only.
pub fn warn_skipped(e: &anyhow::Error, needs: &str) {
    eprintln!(
        "abba: warning: PyTorch competitor skipped ({e:#}); pass --python PATH to a Python with {needs}"
    );
}
