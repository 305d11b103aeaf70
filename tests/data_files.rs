//! The data the repository ships under `data/`: every file `data/README.md` lists is there and nothing else is,
//! and each one decompresses and parses as the README says. Read with flate2, serde_json and safetensors
//! directly, not through the crate's loaders, so a loader bug cannot hide a broken file.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::shipped_data;
use flate2::read::MultiGzDecoder;
use safetensors::{Dtype, SafeTensors};

fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
}

fn readme() -> String {
    std::fs::read_to_string(shipped_data("README.md")).unwrap()
}

/// The rows of the Markdown table whose header row starts with `| {first} |`, as trimmed cells.
fn table(text: &str, first: &str) -> Vec<Vec<String>> {
    let header = format!("| {first} |");
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip_while(|l| !l.starts_with(&header))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert!(
        !rows.is_empty(),
        "data/README.md has no table headed {header}"
    );
    rows
}

/// The `backticked` words of a table cell.
fn quoted(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

/// A shipped gzip file's content; fails unless the file really is gzip (magic bytes 1f 8b).
fn gunzip(rel: &str) -> Vec<u8> {
    let raw = std::fs::read(shipped_data(rel)).unwrap();
    assert_eq!(
        raw.get(..2),
        Some(&[0x1f, 0x8b][..]),
        "data/{rel} is not gzip"
    );
    let mut out = Vec::new();
    MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("data/{rel} does not decompress: {e}"));
    out
}

fn files_under(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            let rel = path.strip_prefix(data_dir()).unwrap();
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn every_file_the_readme_lists_is_there_and_nothing_else_is() {
    let text = readme();
    let mut listed: Vec<String> = table(&text, "path")
        .iter()
        .flat_map(|row| quoted(&row[0]).map(String::from).collect::<Vec<_>>())
        .collect();
    for rel in &listed {
        shipped_data(rel);
    }
    listed.push("README.md".into());
    listed.sort();
    let mut present = Vec::new();
    files_under(data_dir(), &mut present);
    present.sort();
    assert_eq!(
        present, listed,
        "data/ holds exactly the files data/README.md lists"
    );
    let bytes: u64 = present
        .iter()
        .map(|rel| std::fs::metadata(data_dir().join(rel)).unwrap().len())
        .sum();
    assert!(bytes < 7_500_000, "data/ is {bytes} bytes: keep it small");
}

#[test]
fn mnist_rows_are_784_pixels_and_a_label() {
    let text = String::from_utf8(gunzip("mnist/mnist_5k.csv.gz")).unwrap();
    let mut per_class = [0usize; 10];
    for (i, line) in text.lines().enumerate() {
        let values: Vec<u32> = line
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("row {}: {v:?}", i + 1))
            })
            .collect();
        assert_eq!(values.len(), 785, "row {}", i + 1);
        assert!(values[..784].iter().all(|&p| p <= 255), "row {}", i + 1);
        per_class[values[784] as usize] += 1;
    }
    assert_eq!(per_class, [500; 10]);
}

#[test]
fn gsm8k_lines_have_a_question_and_an_answer() {
    for (rel, count) in [
        ("gsm8k/train.jsonl.gz", 7473),
        ("gsm8k/test.jsonl.gz", 1319),
        ("gsm8k/short/train.jsonl.gz", 1555),
        ("gsm8k/short/validation.jsonl.gz", 200),
        ("gsm8k/short/test.jsonl.gz", 285),
    ] {
        let text = String::from_utf8(gunzip(rel)).unwrap();
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{rel}:{}: {e}", i + 1));
            let field = |k: &str| v[k].as_str().filter(|s| !s.trim().is_empty());
            assert!(field("question").is_some(), "{rel}:{}: no question", i + 1);
            let answer = field("answer").unwrap_or_else(|| panic!("{rel}:{}: no answer", i + 1));
            assert!(answer.contains("####"), "{rel}:{}: no final answer", i + 1);
            n += 1;
        }
        assert_eq!(n, count, "{rel}");
    }
}

/// The comparison splits (scripts/make-gsm8k-short.py): the problems of at most 360 characters, validation the
/// last 200 of GSM8K's train file, train the others, test the first 300 (or all) of GSM8K's test file.
#[test]
fn gsm8k_short_splits_are_the_short_problems_of_their_source_files() {
    let rows = |rel: &str| -> Vec<(String, String)> {
        String::from_utf8(gunzip(rel))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["question"].as_str().unwrap().into(),
                    v["answer"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let short = |rel: &str| -> Vec<(String, String)> {
        rows(rel)
            .into_iter()
            .filter(|(q, a)| q.chars().count() + a.chars().count() <= 360)
            .collect()
    };
    let train = short("gsm8k/train.jsonl.gz");
    let (train_part, validation_part) = train.split_at(train.len() - 200);
    assert_eq!(rows("gsm8k/short/train.jsonl.gz"), train_part);
    assert_eq!(rows("gsm8k/short/validation.jsonl.gz"), validation_part);
    let test = short("gsm8k/test.jsonl.gz");
    assert_eq!(
        rows("gsm8k/short/test.jsonl.gz"),
        test[..test.len().min(300)]
    );
}

#[test]
fn shakespeare_is_the_six_plays_as_utf8_text() {
    let text = String::from_utf8(gunzip("text/shakespeare-6plays.txt.gz")).unwrap();
    assert_eq!(text.len(), 788_296);
    for title in [
        "HAMLET, PRINCE OF DENMARK",
        "MACBETH",
        "ROMEO AND JULIET",
        "THE TEMPEST",
        "JULIUS CAESAR",
        "OTHELLO, THE MOOR OF VENICE",
    ] {
        assert!(text.contains(title), "{title}");
    }
}

#[test]
fn minilm_slice_holds_the_tensors_the_readme_lists() {
    let text = readme();
    let want: BTreeMap<String, (Vec<usize>, String)> = table(&text, "tensor")
        .iter()
        .map(|row| {
            let name = quoted(&row[0]).next().expect("a `tensor name`").to_string();
            let shape = row[1].split('×').map(|d| d.parse().unwrap()).collect();
            (name, (shape, row[2].clone()))
        })
        .collect();
    assert_eq!(want.len(), 3);
    let bytes = std::fs::read(shipped_data("minilm/minilm-l6-slice.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let got: BTreeMap<String, (Vec<usize>, String)> = st
        .iter()
        .map(|(name, t)| {
            (
                name.to_string(),
                (t.shape().to_vec(), format!("{:?}", t.dtype())),
            )
        })
        .collect();
    assert_eq!(got, want);
    for (name, t) in st.iter() {
        assert_eq!(t.dtype(), Dtype::F32);
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values.len(), t.shape().iter().product::<usize>());
        // Trained weights: finite, small, not constant.
        assert!(
            values.iter().all(|v| v.is_finite() && v.abs() < 10.0),
            "{name}"
        );
        assert!(values.iter().any(|&v| v != values[0]), "{name}");
    }
}
