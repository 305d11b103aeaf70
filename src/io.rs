//! The ground floor for files. Everything the crate writes that a reader, or a resumed run, must never see half
//! done goes through here: whole files and whole directories appear by rename or not at all, and a failure leaves
//! no temporary behind. TOML specs are read here too, so every parse error names `file:line:column`.
//!
//! The rules, in one place:
//! - a file is written to a hidden sibling (same directory, so the rename is atomic), flushed with `fsync`, then
//!   renamed over the target; the directory is synced so the rename survives a crash;
//! - a directory is filled under a hidden sibling name, the old one (if any) is moved aside, the new one renamed
//!   in, and the old one removed; if the second rename fails the old directory is put back;
//! - an append is one `write` followed by `fdatasync`, so a killed process leaves at most a torn last line.
//!
//! Data files are read through [`open_decompressed`] / [`read_decompressed`], so every loader of text accepts
//! gzip-compressed files too, recognised by their magic bytes rather than their name.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;

use crate::error::{AbbaError, Result};

/// A distinct temporary name per call, so concurrent writers in one process never share one.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `dir/name.ext` → `dir/.name.tmp-PID-N.ext`. The extension is kept because some writers (the plot backends)
/// choose the format from it.
fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let stem = path.file_stem().ok_or_else(|| {
        AbbaError::InvalidArgument(format!("{} has no file name", path.display()))
    })?;
    let mut name = std::ffi::OsString::from(".");
    name.push(stem);
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    Ok(path.with_file_name(name))
}

/// Makes a rename in `dir` durable. Best effort: some file systems refuse to sync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates `dir` and its parents.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| AbbaError::io(dir, e))
}

/// Reads a whole file as UTF-8.
pub fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| AbbaError::io(path, e))
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| AbbaError::io(path, e))
}

/// The first two bytes of every gzip file.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Opens `path` for buffered reading. A gzip file — recognised by its magic bytes, not its name, so a renamed file
/// still loads — is decompressed as it is read (all members, as `zcat` does). The error is left bare so callers
/// can name the path and say what to do.
pub fn open_decompressed(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let mut file = File::open(path)?;
    let mut head = Vec::with_capacity(2);
    (&mut file).take(2).read_to_end(&mut head)?;
    file.rewind()?;
    Ok(if head == GZIP_MAGIC {
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// The whole content of `path`, decompressed if it is gzip (see [`open_decompressed`]).
pub fn read_decompressed(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_decompressed(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = File::create(tmp).map_err(|e| AbbaError::io(tmp, e))?;
        f.write_all(bytes).map_err(|e| AbbaError::io(tmp, e))
    })
}

/// Lets `fill` write a temporary sibling of `path` (same extension), then syncs it and renames it into place.
/// On any failure the temporary is removed and `path` is untouched. Creates the parent directory if needed.
/// Generic in the error type so callers at the `anyhow` edge (the plots) use it too.
pub fn write_atomic_with<E: From<AbbaError>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let dir = parent_of(path);
    create_dir_all(dir)?;
    let tmp = temp_sibling(path)?;
    let finish = || -> Result<()> {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| AbbaError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| AbbaError::io(path, e))?;
        sync_dir(dir);
        Ok(())
    };
    let result = fill(&tmp).and_then(|()| finish().map_err(E::from));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fills a fresh hidden sibling directory with `fill`, then swaps it in for `dir` (replacing any existing one).
/// On failure the temporary directory is removed and `dir` is as it was.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().ok_or_else(|| {
        AbbaError::InvalidArgument(format!("{} is not a directory name", dir.display()))
    })?;
    let parent = parent_of(dir);
    create_dir_all(parent)?;
    let sibling = |what: &str| {
        parent.join(format!(
            ".{}.{what}-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    };
    let tmp = sibling("partial");
    fs::create_dir(&tmp).map_err(|e| AbbaError::io(&tmp, e))?;
    let filled = fill(&tmp).and_then(|()| sync_tree(&tmp));
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = sibling("old");
    let had_old = dir.exists();
    if had_old && let Err(e) = fs::rename(dir, &old) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(AbbaError::io(dir, e));
    }
    if let Err(e) = fs::rename(&tmp, dir) {
        if had_old {
            let _ = fs::rename(&old, dir);
        }
        let _ = fs::remove_dir_all(&tmp);
        return Err(AbbaError::io(dir, e));
    }
    sync_dir(parent);
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Syncs every file directly inside `dir`, and `dir` itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| AbbaError::io(dir, e))? {
        let path = entry.map_err(|e| AbbaError::io(dir, e))?.path();
        if path.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| AbbaError::io(&path, e))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Appends `bytes` with a single write, then syncs the data.
pub fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| AbbaError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_data())
        .map_err(|e| AbbaError::io(path, e))
}

/// Cuts a file back to its last newline (an interrupted append leaves a torn last line) and syncs it. Returns the
/// length kept.
pub fn truncate_to_last_line(path: &Path, bytes: &[u8]) -> Result<usize> {
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| AbbaError::io(path, e))?;
    f.set_len(keep as u64)
        .and_then(|_| f.sync_all())
        .map_err(|e| AbbaError::io(path, e))?;
    Ok(keep)
}

/// Deserialises TOML text; an error names `origin:line:col` and the problem on one line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    format: &'static str,
) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map_or((0, 0), |span| line_col(text, span));
        AbbaError::Format {
            path: format!("{origin}:{line}:{col}"),
            format,
            message: e.message().replace('\n', " "),
        }
    })
}

/// 1-based line and column of a parse error. An empty span at the start of a line is a value left unfinished
/// on the line before (a missing `]`, say), so it is reported at the end of that line.
fn line_col(text: &str, span: std::ops::Range<usize>) -> (usize, usize) {
    let before = &text[..span.start.min(text.len())];
    let before = match before.strip_suffix('\n') {
        Some(trimmed) if span.is_empty() => trimmed,
        _ => before,
    };
    (
        before.matches('\n').count() + 1,
        before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
    )
}

/// Reads and parses a TOML file (see [`parse_toml`]).
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path, format: &'static str) -> Result<T> {
    let text = read_to_string(path)?;
    parse_toml(&text, &path.display().to_string(), format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("abba-io-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn reads_plain_and_gzip_files_by_content_not_name() {
        let d = scratch("gz");
        let text = b"line one\nline two\n";
        let cases: [(&str, Vec<u8>); 3] = [
            ("plain.txt", text.to_vec()),
            ("packed.txt.gz", gzip(text)),
            ("renamed.txt", gzip(text)),
        ];
        for (name, bytes) in &cases {
            fs::write(d.join(name), bytes).unwrap();
            assert_eq!(read_decompressed(&d.join(name)).unwrap(), text, "{name}");
        }
        // Two concatenated members, as `cat a.gz b.gz` makes.
        let mut two = gzip(b"line one\n");
        two.extend(gzip(b"line two\n"));
        fs::write(d.join("two.gz"), two).unwrap();
        assert_eq!(read_decompressed(&d.join("two.gz")).unwrap(), text);
        let lines: Vec<String> = open_decompressed(&d.join("packed.txt.gz"))
            .unwrap()
            .lines()
            .map(|l| l.unwrap())
            .collect();
        assert_eq!(lines, ["line one", "line two"]);
        // Files shorter than the magic are plain; a gzip header over a broken stream is an error, not garbage.
        for short in [&b""[..], b"x", &GZIP_MAGIC[..1]] {
            fs::write(d.join("short"), short).unwrap();
            assert_eq!(read_decompressed(&d.join("short")).unwrap(), short);
        }
        let mut broken = gzip(text);
        broken.truncate(broken.len() / 2);
        fs::write(d.join("broken.gz"), broken).unwrap();
        assert!(read_decompressed(&d.join("broken.gz")).is_err());
        assert!(read_decompressed(&d.join("missing")).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_names_are_hidden_distinct_and_keep_the_extension() {
        let a = temp_sibling(Path::new("out/fig2.png")).unwrap();
        let b = temp_sibling(Path::new("out/fig2.png")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("out")));
        let name = a.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with(".fig2.tmp-") && name.ends_with(".png"),
            "{name}"
        );
    }

    #[test]
    fn a_failed_file_write_leaves_nothing_and_keeps_the_old_file() {
        let dir = scratch("file");
        let out = dir.join("x.csv");
        write_atomic(&out, b"old\n").unwrap();
        let result: Result<()> = write_atomic_with(&out, |tmp| {
            fs::write(tmp, b"half").unwrap();
            Err(AbbaError::InvalidArgument("boom".into()))
        });
        assert!(result.is_err());
        assert_eq!(fs::read(&out).unwrap(), b"old\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_directory_write_keeps_the_old_directory() {
        let dir = scratch("dir");
        let out = dir.join("adapter");
        write_dir_atomic(&out, |tmp| write_atomic(&tmp.join("a"), b"1")).unwrap();
        let failed = write_dir_atomic(&out, |tmp| {
            write_atomic(&tmp.join("a"), b"2")?;
            Err(AbbaError::InvalidArgument("boom".into()))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(out.join("a")).unwrap(), b"1");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        write_dir_atomic(&out, |tmp| write_atomic(&tmp.join("b"), b"3")).unwrap();
        assert!(!out.join("a").exists() && out.join("b").exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut() {
        let dir = scratch("torn");
        let f = dir.join("r.csv");
        fs::write(&f, b"a,b\n1,2\n3,").unwrap();
        let bytes = fs::read(&f).unwrap();
        assert_eq!(truncate_to_last_line(&f, &bytes).unwrap(), 8);
        assert_eq!(fs::read(&f).unwrap(), b"a,b\n1,2\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn toml_errors_name_line_and_column() {
        let e = parse_toml::<toml::Table>("a = 1\nb = \n", "spec.toml", "study TOML").unwrap_err();
        assert!(e.to_string().contains("spec.toml:2:"), "{e}");
        let e =
            parse_toml::<toml::Table>("a = [1, 2\nb = 3\n", "spec.toml", "study TOML").unwrap_err();
        assert!(e.to_string().contains("spec.toml:1:"), "{e}");
    }
}
