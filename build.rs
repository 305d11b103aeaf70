//! Records the git commit the binary was built from, so every result row can name the code that made it. A build
//! from a working tree with uncommitted changes to tracked files is marked `-dirty`.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let label = if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=ABBA_GIT_COMMIT={label}");
    // Ask git where HEAD, the index and the branch refs live: in a worktree `.git` is a file and they are
    // elsewhere, and a watched path that does not exist would leave the label stale after a commit.
    for what in ["HEAD", "index", "refs/heads"] {
        let path =
            git(&["rev-parse", "--git-path", what]).unwrap_or_else(|| format!(".git/{what}"));
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
}
