//! The crate's layering, checked on its source: a lower module never imports a higher one (so the maths can be
//! read, tested and reused without the studies, the reports or candle), and no two modules import each other.
//! The layers are those of docs/architecture.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level library modules, bottom up. A module may use modules of lower rank only.
const LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    ("rng", 0),
    ("process", 0),
    ("stats", 0),
    ("io", 1),
    ("rows", 1),
    ("linalg", 1),
    ("adapter", 2),
    ("budget", 3),
    ("target", 3),
    ("metrics", 3),
    ("fit", 4),
    ("study", 5),
    ("report", 6),
    ("finetune", 7),
    ("bench", 8),
    ("compare", 8),
];

fn rank(top: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, r)| *r)
}

/// Every `.rs` file of the library (the binary's `main.rs` and `cli/` sit above all of it).
fn library_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src/ is readable") {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("cli") {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs")
                && !p.ends_with("main.rs")
                && !p.ends_with("lib.rs")
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut out,
    );
    out.sort();
    out
}

/// `src/a/b/c.rs` → ["a", "b", "c"]; `src/a/mod.rs` → ["a"].
fn module_path(file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
        .unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Code without comments (doc comments mention other modules in prose).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file refers to through `crate::…` and `super::…` (`self::` stays inside the file).
fn references(module: &[String], text: &str) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let idents = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| !p.is_empty() && p.chars().next().is_some_and(|c| c.is_lowercase()))
            .collect()
    };
    let src = code(text);
    for (i, _) in src.match_indices("crate::") {
        let path = idents(&src[i + "crate::".len()..]);
        if !path.is_empty() {
            out.insert(path);
        }
    }
    // `super::x` from module a::b::c (a file) means a::b::x; from a mod.rs module a::b it means a::x.
    for (i, _) in src.match_indices("super::") {
        if i > 0 && src[..i].ends_with("::") {
            continue; // super::super:: — handled by its first segment
        }
        let mut rest = &src[i..];
        let mut base = module.to_vec();
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let mut path = base;
        path.extend(idents(rest));
        out.insert(path);
    }
    out
}

/// The longest prefix of `path` that is a module of the crate.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = library_files();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(f)).collect();
    let mut g = BTreeMap::new();
    for f in &files {
        let m = module_path(f);
        let text = std::fs::read_to_string(f).unwrap();
        let deps: BTreeSet<Vec<String>> = references(&m, &text)
            .iter()
            .filter_map(|p| resolve(p, &modules))
            .filter(|d| *d != m)
            .collect();
        g.insert(m, deps);
    }
    g
}

#[test]
fn lower_modules_never_import_higher_ones() {
    let mut bad = Vec::new();
    for (m, deps) in graph() {
        let Some(from) = rank(&m[0]) else {
            bad.push(format!("{}: top-level module not in LAYERS", m.join("::")));
            continue;
        };
        for d in deps {
            match rank(&d[0]) {
                Some(to) if to < from || d[0] == m[0] => {}
                _ => bad.push(format!("{} imports {}", m.join("::"), d.join("::"))),
            }
        }
    }
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

#[test]
fn no_two_modules_import_each_other() {
    let g = graph();
    let ancestor = |a: &Vec<String>, b: &Vec<String>| b.starts_with(a) || a.starts_with(b);
    let mut cycles = Vec::new();
    for (a, deps) in &g {
        for b in deps {
            // A parent re-exporting its children while they use its shared items is Rust's module pattern.
            if a < b && !ancestor(a, b) && g.get(b).is_some_and(|back| back.contains(a)) {
                cycles.push(format!("{} ↔ {}", a.join("::"), b.join("::")));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules importing each other:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_checker_sees_imports() {
    // The checks above pass vacuously if the parser finds nothing: make sure it reads known edges.
    let g = graph();
    let fit = g.get(&vec!["fit".to_string(), "als".to_string()]).unwrap();
    assert!(fit.iter().any(|d| d[0] == "linalg"), "{fit:?}");
    let toy_run = g
        .get(["finetune", "toy", "run"].map(String::from).as_slice())
        .unwrap();
    assert!(
        toy_run.contains(&["finetune", "toy", "output"].map(String::from).to_vec()),
        "{toy_run:?}"
    );
}
