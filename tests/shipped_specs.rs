//! Every spec shipped under `experiments/` loads and passes its checks, so a README command never stops at a
//! typo: studies, comparisons, toy runs and transformer fine-tuning configs, each through the loader its command uses.

use std::path::Path;

use abba::finetune::job::spec::FinetuneSpec;
use abba::study::spec::StudySpec;

/// Whether every `base = "…"` and `tuned = "…"` path of a delta study exists (relative to the repository root).
fn delta_inputs_exist(text: &str) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            (l.starts_with("base =") || l.starts_with("tuned =")).then(|| l.split('"').nth(1))?
        })
        .all(|p| root.join(p).exists())
}

#[test]
fn every_shipped_experiment_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let result = if text.contains("task = \"mnist-toy\"") {
            abba::finetune::toy::load_spec(&path).map(|_| ())
        } else if name.starts_with("compare-") && text.contains("[[methods]]") {
            abba::compare::CompareSpec::load(&path).map(|_| ())
        } else if name.starts_with("finetune-") || text.contains("\n[output]") {
            FinetuneSpec::load(&path).map(|_| ())
        } else if text.contains("kind = \"delta\"") && !delta_inputs_exist(&text) {
            // A study of fine-tuning updates reads checkpoints another command writes (see its header); before
            // that, loading must fail on the missing checkpoint and nothing else.
            match StudySpec::load(&path) {
                Ok(_) => panic!("{name}: loaded without its checkpoints"),
                Err(e) => assert!(
                    e.to_string().contains("no such file or directory"),
                    "{name}: {e}"
                ),
            }
            Ok(())
        } else {
            StudySpec::load(&path).map(|_| ())
        };
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} specs found in {}", dir.display());
}
