//! Images appear whole or not at all: a crash or a failed render must never leave a truncated file where a reader,
//! or a resumed report that skips existing outputs, expects a finished one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Renders through `draw` into a hidden file beside `out`, then renames it into place (atomic within one file
/// system, which a sibling file guarantees). Creates `out`'s directory if needed.
///
/// The temporary name keeps `out`'s extension because the bitmap backend picks the image format from it.
pub(crate) fn write_atomically(out: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(out)?;
    if let Some(dir) = tmp.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // `draw` owns its backend and drops it before returning, so the file is complete (or abandoned) by now.
    if let Err(e) = draw(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("rendering {}", out.display())));
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("moving {} to {}", tmp.display(), out.display()))
}

/// `dir/name.ext` → `dir/.name.tmp.ext`.
fn temp_path(out: &Path) -> Result<PathBuf> {
    let (Some(stem), Some(ext)) = (out.file_stem(), out.extension()) else {
        bail!(
            "{}: an output image needs a file name with an extension (.png, .svg)",
            out.display()
        );
    };
    let mut name = std::ffi::OsString::from(".");
    name.push(stem);
    name.push(".tmp.");
    name.push(ext);
    Ok(out.with_file_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_path_hides_the_file_and_keeps_the_extension() {
        assert_eq!(
            temp_path(Path::new("out/fig2.png")).unwrap(),
            Path::new("out/.fig2.tmp.png")
        );
        assert_eq!(
            temp_path(Path::new("fig2.svg")).unwrap(),
            Path::new(".fig2.tmp.svg")
        );
        assert!(temp_path(Path::new("out/fig2")).is_err());
    }

    #[test]
    fn a_failed_render_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("abba-atomic-{}", std::process::id()));
        let out = dir.join("x.png");
        let result = write_atomically(&out, |tmp| {
            std::fs::write(tmp, b"half an image")?;
            bail!("boom")
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
