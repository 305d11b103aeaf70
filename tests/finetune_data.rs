//! Instruction data, tokenisers, batching, the arithmetic generator and GSM8K scoring, each checked against an
//! independent reference (literal templates, hand-computed ids, re-evaluated arithmetic, HF tokenizer outputs).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use abba::AbbaError;
use abba::finetune::arith::{arithmetic_problems, write_jsonl};
use abba::finetune::data::{
    ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, Batcher, Encoded, Example, FieldNames,
    PromptStyle, alpaca_prompt, collate, encode_example, lm_windows, read_jsonl,
};
use abba::finetune::job::data_prep::prepare;
use abba::finetune::job::spec::DataSection;
use abba::finetune::scoring::{
    exact_match, is_correct, last_number, numbers_match, reference_answer,
};
use abba::finetune::synthetic::{Split, SyntheticTask, synthetic_problems};
use abba::finetune::tokenizer::{SpecialIds, TextTokenizer};
use common::shipped_data;

/// A fresh path under the system temp dir, unique per process and call.
fn temp_path(tag: &str, ext: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "abba-finetune-data-{}-{tag}-{n}.{ext}",
        std::process::id()
    ))
}

fn write_temp(tag: &str, text: &str) -> PathBuf {
    let p = temp_path(tag, "jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

fn ex(instruction: &str, input: Option<&str>, output: &str) -> Example {
    Example {
        instruction: instruction.into(),
        input: input.map(Into::into),
        output: output.into(),
    }
}

// ---------------------------------------------------------------- Alpaca template

#[test]
fn alpaca_templates_are_stanford_alpacas_verbatim() {
    // Typed from Stanford Alpaca's train.py PROMPT_DICT.
    let with_input = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
    let no_input = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";
    assert_eq!(ALPACA_PROMPT_INPUT, with_input);
    assert_eq!(ALPACA_PROMPT_NO_INPUT, no_input);
    assert_eq!(
        alpaca_prompt(&ex("Add the numbers.", Some("2 and 3"), "5")),
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    );
    let no = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nWhat is 2+3?\n\n### Response:\n";
    assert_eq!(alpaca_prompt(&ex("What is 2+3?", None, "5")), no);
    // Stanford Alpaca uses the no-input template when the input is empty.
    assert_eq!(alpaca_prompt(&ex("What is 2+3?", Some(""), "5")), no);
}

#[test]
fn alpaca_prompt_leaves_braces_in_the_text_alone() {
    let p = alpaca_prompt(&ex("Explain {input} and {x}", Some("{instruction}"), ""));
    assert!(
        p.contains("### Instruction:\nExplain {input} and {x}\n\n### Input:\n{instruction}\n\n"),
        "{p}"
    );
}

// ---------------------------------------------------------------- JSONL reading

#[test]
fn read_jsonl_reads_the_three_conventions() {
    let qa = write_temp(
        "qa",
        "{\"question\": \"q1\", \"answer\": \"a1\"}\n{\"answer\": \"a2\", \"question\": \"q2\", \"id\": 7}\n",
    );
    let got = read_jsonl(&qa, &"question/answer".parse().unwrap()).unwrap();
    assert_eq!(got, vec![ex("q1", None, "a1"), ex("q2", None, "a2")]);

    let qr = write_temp(
        "qr",
        "{\"query\": \"Q\", \"response\": \"R\", \"type\": \"GSM_Rephrased\"}\r\n",
    );
    let got = read_jsonl(&qr, &FieldNames::QueryResponse).unwrap();
    assert_eq!(got, vec![ex("Q", None, "R")]);

    let iio = write_temp(
        "iio",
        "{\"instruction\": \"I1\", \"input\": \"ctx\", \"output\": \"O1\"}\n\
         {\"instruction\": \"I2\", \"input\": \"\", \"output\": \"O2\"}\n\
         {\"instruction\": \"I3\", \"output\": \"O3\"}\n",
    );
    let got = read_jsonl(&iio, &"instruction/input/output".parse().unwrap()).unwrap();
    assert_eq!(
        got,
        vec![
            ex("I1", Some("ctx"), "O1"),
            ex("I2", None, "O2"),
            ex("I3", None, "O3")
        ]
    );

    let custom = write_temp("custom", "{\"prompt\": \"P\", \"completion\": \"C\"}\n");
    let fields = FieldNames::Custom {
        instruction: "prompt".into(),
        input: None,
        output: "completion".into(),
    };
    assert_eq!(
        read_jsonl(&custom, &fields).unwrap(),
        vec![ex("P", None, "C")]
    );
    for p in [qa, qr, iio, custom] {
        std::fs::remove_file(p).unwrap();
    }
}

fn data_error(text: &str, fields: &FieldNames) -> (AbbaError, PathBuf) {
    let p = write_temp("bad", text);
    let err = read_jsonl(&p, fields).unwrap_err();
    std::fs::remove_file(&p).unwrap();
    (err, p)
}

#[test]
fn empty_line_is_a_data_error_with_path_and_line() {
    let (err, p) = data_error(
        "{\"question\": \"q\", \"answer\": \"a\"}\n\n{\"question\": \"q\", \"answer\": \"a\"}\n",
        &FieldNames::default(),
    );
    let msg = err.to_string();
    assert!(matches!(&err, AbbaError::Data { line: 2, .. }), "{err:?}");
    assert!(msg.contains(&format!("{}:2:", p.display())), "{msg}");
    assert!(msg.contains("empty line"), "{msg}");
    assert_eq!(msg.lines().count(), 1);
}

#[test]
fn malformed_json_names_the_line() {
    let (err, _) = data_error(
        "{\"question\": \"q\", \"answer\": \"a\"}\n{\"question\": \"q\", \"answer\": \n",
        &FieldNames::default(),
    );
    assert!(matches!(&err, AbbaError::Data { line: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("invalid JSON"), "{err}");
    let (err, _) = data_error("[1, 2]\n", &FieldNames::default());
    assert!(err.to_string().contains("not a JSON object"), "{err}");
}

#[test]
fn missing_field_lists_the_fields_present() {
    let (err, _) = data_error(
        "{\"query\": \"q\", \"response\": \"r\"}\n",
        &FieldNames::QuestionAnswer,
    );
    let msg = err.to_string();
    assert!(matches!(&err, AbbaError::Data { line: 1, .. }), "{err:?}");
    assert!(msg.contains("\"question\""), "{msg}");
    assert!(msg.contains("query, response"), "{msg}");
    assert!(msg.contains("field names"), "{msg}");
}

#[test]
fn non_string_field_and_empty_file_are_errors() {
    let (err, _) = data_error(
        "{\"question\": \"q\", \"answer\": 42}\n",
        &FieldNames::QuestionAnswer,
    );
    assert!(
        err.to_string()
            .contains("\"answer\" is a number, not a string"),
        "{err}"
    );
    let (err, _) = data_error("", &FieldNames::QuestionAnswer);
    assert!(
        matches!(
            err,
            AbbaError::Format {
                format: "JSONL",
                ..
            }
        ),
        "{err:?}"
    );
    let missing = temp_path("missing", "jsonl");
    let err = read_jsonl(&missing, &FieldNames::QuestionAnswer).unwrap_err();
    assert!(
        matches!(&err, AbbaError::Io { path, .. } if path == &missing.display().to_string()),
        "{err:?}"
    );
}

#[test]
fn field_names_parse_from_strings_and_toml() {
    assert_eq!(
        "query/response".parse::<FieldNames>().unwrap(),
        FieldNames::QueryResponse
    );
    let err = "question/response".parse::<FieldNames>().unwrap_err();
    assert!(matches!(err, AbbaError::UnknownName { .. }), "{err:?}");
    assert!(
        err.to_string().contains("instruction/input/output"),
        "{err}"
    );

    #[derive(serde::Deserialize)]
    struct Cfg {
        fields: FieldNames,
    }
    let c: Cfg = toml::from_str("fields = \"instruction/input/output\"").unwrap();
    assert_eq!(c.fields, FieldNames::InstructionInputOutput);
    let c: Cfg =
        toml::from_str("fields = { instruction = \"prompt\", output = \"completion\" }").unwrap();
    assert_eq!(
        c.fields,
        FieldNames::Custom {
            instruction: "prompt".into(),
            input: None,
            output: "completion".into()
        }
    );
    assert!(toml::from_str::<Cfg>("fields = \"nope\"").is_err());
    assert_eq!(FieldNames::default(), FieldNames::QuestionAnswer);
}

/// Uses data/gsm8k/test.jsonl.gz (GSM8K, MIT; see data/README.md).
#[test]
fn gsm8k_test_split_reads_and_every_reference_parses() {
    let path = shipped_data("gsm8k/test.jsonl.gz");
    let data = read_jsonl(&path, &FieldNames::QuestionAnswer).unwrap();
    assert_eq!(data.len(), 1319);
    for (i, e) in data.iter().enumerate() {
        let r = reference_answer(&e.output)
            .unwrap_or_else(|| panic!("example {i}: no reference in {:?}", e.output));
        assert!(r.parse::<f64>().is_ok(), "example {i}: {r:?}");
        // The reference is the text after #### with commas removed.
        let raw = e
            .output
            .rsplit_once("####")
            .unwrap()
            .1
            .trim()
            .replace(',', "");
        assert_eq!(r, raw, "example {i}");
    }
    assert_eq!(reference_answer(&data[0].output).as_deref(), Some("18"));
}

// ---------------------------------------------------------------- tokenisation and batches

fn byte_special() -> SpecialIds {
    SpecialIds::resolve(&TextTokenizer::bytes(), None, None).unwrap()
}

#[test]
fn byte_tokenizer_roundtrips_and_knows_its_specials() {
    let tok = TextTokenizer::bytes();
    assert_eq!(tok.vocab_size(), 259);
    let text = "naïve 12+7=19";
    let ids = tok.encode(text).unwrap();
    assert_eq!(
        ids,
        text.as_bytes()
            .iter()
            .map(|&b| b as u32)
            .collect::<Vec<_>>()
    );
    let mut with_specials = vec![256];
    with_specials.extend(&ids);
    with_specials.extend([257, 258]);
    assert_eq!(tok.decode(&with_specials).unwrap(), text);
    assert!(tok.decode(&[259]).is_err());
    assert_eq!(
        byte_special(),
        SpecialIds {
            bos: Some(256),
            eos: 257,
            pad: 258
        }
    );
    let s = SpecialIds::resolve(&tok, Some(10), Some(11)).unwrap();
    assert_eq!((s.bos, s.eos), (Some(10), 11));
    assert!(SpecialIds::resolve(&tok, None, Some(259)).is_err());
}

#[test]
fn encode_example_masks_exactly_the_prompt() {
    let tok = TextTokenizer::bytes();
    let e = ex("What is 2+3?", None, "2 + 3 = 5\n#### 5");
    let prompt = alpaca_prompt(&e);
    let enc = encode_example(&tok, &e, &byte_special(), PromptStyle::Alpaca, 10_000).unwrap();
    let mut want_ids = vec![256u32];
    want_ids.extend(prompt.bytes().map(u32::from));
    want_ids.extend(e.output.bytes().map(u32::from));
    want_ids.push(257);
    assert_eq!(enc.ids, want_ids);
    let n0 = 1 + prompt.len();
    assert_eq!(enc.loss_mask.len(), enc.ids.len());
    assert!(enc.loss_mask[..n0].iter().all(|&m| m == 0.0));
    assert!(enc.loss_mask[n0..].iter().all(|&m| m == 1.0));
    assert_eq!(enc.loss_mask[n0..].len(), e.output.len() + 1);
    assert_eq!(enc.trainable_tokens(), e.output.len() + 1);

    // Truncation keeps the prefix.
    let cut = encode_example(&tok, &e, &byte_special(), PromptStyle::Alpaca, n0 + 3).unwrap();
    assert_eq!(cut.ids, want_ids[..n0 + 3]);
    assert_eq!(cut.loss_mask, enc.loss_mask[..n0 + 3]);
    // A response cut away entirely gives an all-zero mask, not an error.
    let gone = encode_example(&tok, &e, &byte_special(), PromptStyle::Alpaca, 20).unwrap();
    assert_eq!(gone.ids.len(), 20);
    assert_eq!(gone.trainable_tokens(), 0);
    assert!(encode_example(&tok, &e, &byte_special(), PromptStyle::Alpaca, 1).is_err());

    // Without BOS the prompt starts at 0.
    let nobos = SpecialIds {
        bos: None,
        ..byte_special()
    };
    let enc2 = encode_example(&tok, &e, &nobos, PromptStyle::Alpaca, 10_000).unwrap();
    assert_eq!(enc2.ids, want_ids[1..]);
}

#[test]
fn the_plain_prompt_is_the_instruction_and_a_newline_and_only_it_is_masked() {
    let tok = TextTokenizer::bytes();
    let e = ex("347+582=", None, "929");
    assert_eq!(PromptStyle::Plain.render(&e), "347+582=\n");
    assert_eq!(
        PromptStyle::Plain.render(&ex("Sort:", Some("3 1 2"), "1 2 3")),
        "Sort:\n3 1 2\n"
    );
    let enc = encode_example(&tok, &e, &byte_special(), PromptStyle::Plain, 100).unwrap();
    let want: Vec<u32> = std::iter::once(256)
        .chain(b"347+582=\n929".iter().map(|&b| b as u32))
        .chain(std::iter::once(257))
        .collect();
    assert_eq!(enc.ids, want);
    // BOS and the 9 prompt bytes are masked; the 3 answer bytes and EOS are trained.
    assert_eq!(enc.loss_mask, [vec![0.0; 10], vec![1.0; 4]].concat());
    assert_eq!("plain".parse::<PromptStyle>().unwrap(), PromptStyle::Plain);
    assert!("chat".parse::<PromptStyle>().is_err());
}

#[test]
fn addition_problems_are_right_seeded_and_their_splits_share_no_pair() {
    let draw =
        |n, seed, split| synthetic_problems(SyntheticTask::Addition, 2, n, seed, split).unwrap();
    let pairs = |v: &[Example]| -> std::collections::HashSet<(u64, u64)> {
        v.iter()
            .map(|e| {
                let (a, b) = e.instruction.trim_end_matches('=').split_once('+').unwrap();
                let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                assert!(a < 100 && b < 100, "{}", e.instruction);
                assert_eq!(e.output, (a + b).to_string(), "{}", e.instruction);
                (a, b)
            })
            .collect()
    };
    let train = draw(3000, 7, Split::Train);
    assert_eq!(train, draw(3000, 7, Split::Train));
    assert_ne!(train, draw(3000, 8, Split::Train));
    let (validation, test) = (draw(400, 7, Split::Validation), draw(400, 7, Split::Test));
    let (tr, va, te) = (pairs(&train), pairs(&validation), pairs(&test));
    assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
    // Digits out of range are refused in one line.
    let err = synthetic_problems(SyntheticTask::Addition, 0, 1, 0, Split::Train).unwrap_err();
    assert!(err.to_string().contains("size = 0"), "{err}");
}

#[test]
fn reversal_problems_are_right_seeded_and_their_splits_share_no_word() {
    let draw = |n, split| synthetic_problems(SyntheticTask::Reverse, 5, n, 3, split).unwrap();
    let words = |v: &[Example]| -> std::collections::HashSet<String> {
        v.iter()
            .map(|e| {
                let w = e.instruction.strip_suffix('=').unwrap();
                assert!(
                    (3..=5).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase()),
                    "{w}"
                );
                assert_eq!(e.output, w.chars().rev().collect::<String>());
                w.to_string()
            })
            .collect()
    };
    let train = draw(2000, Split::Train);
    assert_eq!(train, draw(2000, Split::Train));
    let (tr, va, te) = (
        words(&train),
        words(&draw(300, Split::Validation)),
        words(&draw(300, Split::Test)),
    );
    assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
    let lengths: std::collections::HashSet<usize> = tr.iter().map(String::len).collect();
    assert_eq!(lengths.len(), 3, "every length from 3 to 5 is drawn");
    assert!(synthetic_problems(SyntheticTask::Reverse, 2, 1, 0, Split::Train).is_err());
}

#[test]
fn collate_shifts_by_one_and_pads() {
    let a = Encoded {
        ids: vec![1, 2, 3, 4],
        loss_mask: vec![0.0, 0.0, 1.0, 1.0],
    };
    let b = Encoded {
        ids: vec![5, 6],
        loss_mask: vec![0.0, 1.0],
    };
    let batch = collate(&[&a, &b], 99);
    assert_eq!((batch.batch, batch.seq), (2, 3));
    assert_eq!(batch.inputs, vec![1, 2, 3, 5, 99, 99]);
    assert_eq!(batch.targets, vec![2, 3, 4, 6, 99, 99]);
    assert_eq!(batch.loss_mask, vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(batch.tokens(), 3);
    let empty = collate(&[], 0);
    assert_eq!((empty.batch, empty.seq, empty.inputs.len()), (0, 0, 0));
}

#[test]
fn batcher_is_seeded_permutes_each_epoch_and_resumes() {
    let (n, bs) = (10, 3);
    let draw = |seed: u64, steps: usize| {
        let mut b = Batcher::new(n, bs, seed).unwrap();
        (0..steps).map(|_| b.next_indices()).collect::<Vec<_>>()
    };
    let run = draw(7, 12); // 3 epochs of 4 batches (3, 3, 3, 1)
    assert_eq!(run, draw(7, 12));
    assert_ne!(run, draw(8, 12));
    let epochs: Vec<Vec<usize>> = run.chunks(4).map(|c| c.concat()).collect();
    for e in &epochs {
        let mut sorted = e.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    }
    assert_ne!(epochs[0], epochs[1], "each epoch is reshuffled");
    assert_eq!(
        run.iter().map(Vec::len).collect::<Vec<_>>()[..4],
        [3, 3, 3, 1]
    );

    for step in [0, 1, 3, 4, 5, 9] {
        let mut b = Batcher::at_step(n, bs, 7, step).unwrap();
        assert_eq!(b.step(), step);
        assert_eq!((b.epoch(), b.position()), (step / 4, step % 4));
        let rest: Vec<_> = (step..12).map(|_| b.next_indices()).collect();
        assert_eq!(rest, run[step..], "resume at step {step}");
    }
    assert!(Batcher::new(0, 3, 1).is_err());
    assert!(Batcher::new(3, 0, 1).is_err());
}

#[test]
fn lm_windows_tile_the_stream_with_one_shared_token() {
    let ids: Vec<u32> = (0..11).collect();
    let w = lm_windows(&ids, 4);
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].ids, vec![0, 1, 2, 3, 4]);
    assert_eq!(w[1].ids, vec![4, 5, 6, 7, 8]);
    assert!(w.iter().all(|e| e.loss_mask == vec![1.0; 5]));
    let b = collate(&w.iter().collect::<Vec<_>>(), 0);
    assert_eq!(b.targets, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(lm_windows(&ids[..4], 4).len(), 0);
    assert!(lm_windows(&ids, 0).is_empty());
}

// ---------------------------------------------------------------- arithmetic generator

/// Evaluates `a op b` (the generator only writes one operator per line).
fn eval(expr: &str) -> i64 {
    let t: Vec<&str> = expr.split_whitespace().collect();
    assert_eq!(t.len(), 3, "{expr:?}");
    let (a, b): (i64, i64) = (t[0].parse().unwrap(), t[2].parse().unwrap());
    match t[1] {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => {
            assert_eq!(a % b, 0, "{expr:?} is not exact");
            a / b
        }
        op => panic!("unknown operator {op:?}"),
    }
}

#[test]
fn arithmetic_problems_are_seeded_and_their_answers_are_right() {
    let a = arithmetic_problems(300, 42);
    assert_eq!(a, arithmetic_problems(300, 42));
    assert_ne!(a, arithmetic_problems(300, 43));
    let mut ops = std::collections::HashSet::new();
    for e in &a {
        let (work, answer) = e.output.split_once("\n#### ").expect("#### line");
        let answer: i64 = answer.parse().unwrap();
        let mut last = None;
        for line in work.lines() {
            let (expr, value) = line.split_once(" = ").unwrap();
            let value: i64 = value.parse().unwrap();
            assert_eq!(eval(expr), value, "{line}");
            assert!((0..=200).contains(&value), "{line}");
            ops.insert((
                work.lines().count(),
                expr.split_whitespace().nth(1).unwrap().to_string(),
            ));
            last = Some(value);
        }
        assert_eq!(last, Some(answer), "{}", e.output);
        assert_eq!(reference_answer(&e.output), Some(answer.to_string()));
        assert!(e.instruction.ends_with('?') && e.input.is_none());
    }
    // One-step +, -, *, / and two-step problems all occur.
    for op in ["+", "-", "*", "/"] {
        assert!(ops.contains(&(1, op.to_string())), "no one-step {op}");
    }
    assert!(ops.iter().any(|(n, _)| *n == 2), "no two-step problems");
}

#[test]
fn write_jsonl_roundtrips_through_read_jsonl() {
    let probs = arithmetic_problems(25, 3);
    let p = temp_path("arith", "jsonl");
    write_jsonl(&p, &probs).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.starts_with("{\"question\":"), "{text}");
    assert_eq!(read_jsonl(&p, &FieldNames::QuestionAnswer).unwrap(), probs);
    std::fs::remove_file(&p).unwrap();
    assert!(write_jsonl(&p, &[]).is_err());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// JSONL and plain-text corpora load the same gzip-compressed, whatever the file is called.
#[test]
fn gzip_files_read_like_the_plain_ones() {
    let probs = arithmetic_problems(12, 5);
    let plain = temp_path("plain", "jsonl");
    write_jsonl(&plain, &probs).unwrap();
    let bytes = std::fs::read(&plain).unwrap();
    for ext in ["jsonl.gz", "jsonl"] {
        let packed = temp_path("packed", ext);
        std::fs::write(&packed, gzip(&bytes)).unwrap();
        assert_eq!(
            read_jsonl(&packed, &FieldNames::QuestionAnswer).unwrap(),
            probs
        );
        std::fs::remove_file(&packed).unwrap();
    }

    let text = "To be, or not to be, that is the question:\n".repeat(20);
    let (tok, special) = (TextTokenizer::bytes(), byte_special());
    let windows = |path: &Path| {
        let section: DataSection = toml::from_str(&format!(
            "text = {:?}\nmax_len = 33\neval_fraction = 0.25",
            path.display().to_string()
        ))
        .unwrap();
        let p = prepare(&section, &tok, &special).unwrap();
        (p.train, p.eval)
    };
    let txt = temp_path("corpus", "txt");
    std::fs::write(&txt, &text).unwrap();
    let want = windows(&txt);
    assert!(!want.0.is_empty() && !want.1.is_empty());
    for ext in ["txt.gz", "txt"] {
        let packed = temp_path("corpus-packed", ext);
        std::fs::write(&packed, gzip(text.as_bytes())).unwrap();
        assert_eq!(windows(&packed), want, "{ext}");
        std::fs::remove_file(&packed).unwrap();
    }
    // A gzip stream cut short is an error naming the file, not a shorter corpus.
    let cut = temp_path("corpus-cut", "txt.gz");
    let packed = gzip(text.as_bytes());
    std::fs::write(&cut, &packed[..packed.len() / 2]).unwrap();
    let section: DataSection =
        toml::from_str(&format!("text = {:?}", cut.display().to_string())).unwrap();
    let err = prepare(&section, &tok, &special).err().unwrap().to_string();
    assert!(err.contains(&cut.display().to_string()), "{err}");
    for p in [plain, txt, cut] {
        std::fs::remove_file(p).unwrap();
    }
}

// ---------------------------------------------------------------- scoring

#[test]
fn scoring_follows_gsm8k_conventions() {
    let cases: &[(&str, Option<&str>)] = &[
        ("The answer is 1,234.", Some("1234")),
        ("-3.5 then 7", Some("7")),
        ("no digits here", None),
        ("It costs -3.5 dollars", Some("-3.5")),
        ("16 - 3 - 4 = 9 eggs, so 9 * 2 = $18.", Some("18")),
        ("10-3=7", Some("7")),
        ("total 12,50", Some("50")),
        ("x = 0.25", Some("0.25")),
        ("1,000,000 people", Some("1000000")),
        ("answer: +5", Some("5")),
    ];
    for (text, want) in cases {
        assert_eq!(last_number(text).as_deref(), *want, "{text:?}");
    }
    assert_eq!(
        reference_answer("work\n#### 1,234").as_deref(),
        Some("1234")
    );
    assert_eq!(reference_answer("#### -7 ").as_deref(), Some("-7"));
    assert_eq!(reference_answer("no marker 5"), None);
    assert!(
        numbers_match("19", "19.0")
            && numbers_match("19.00", "19")
            && numbers_match("1,234", "1234")
    );
    assert!(!numbers_match("19", "19.01") && !numbers_match("abc", "19"));
    assert!(exact_match(" 18\n", "18") && !exact_match("18.0", "18"));
    assert!(is_correct("So she makes 9 * 2 = 18.0 dollars.", "18"));
    assert!(!is_correct("She makes 18 dollars, 2 more.", "18"));
}

// ---------------------------------------------------------------- Hugging Face tokenizer

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(rel)
}

#[test]
fn hf_tokenizer_matches_python_tokenizers() {
    let (tj, expected) = (
        fixture("tiny-llama/tokenizer.json"),
        fixture("tiny-llama/tokenizer_expected.json"),
    );
    if !tj.exists() || !expected.exists() {
        println!(
            "skipping: HF tokenizer fixtures not present under {}",
            fixture("").display()
        );
        return;
    }
    let tok = TextTokenizer::from_file(&tj).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&expected).unwrap()).unwrap();
    assert_eq!(
        tok.vocab_size() as u64,
        want["vocab_size"].as_u64().unwrap()
    );
    let cases = want["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(
            tok.decode(&ids).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?}"
        );
        let with_special: Vec<u32> = case["ids_with_special_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.decode(&with_special).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?}"
        );
    }
    // config.json says bos 1, eos 2; the lookup finds the same without it; there is no <pad>, so pad = eos.
    let s = SpecialIds::resolve(&tok, None, None).unwrap();
    assert_eq!(
        s,
        SpecialIds {
            bos: Some(1),
            eos: 2,
            pad: 2
        }
    );
    assert_eq!(tok.token_id("</s>"), Some(2));
}

#[test]
fn tokenizer_file_errors_are_typed() {
    let missing = temp_path("missing-tok", "json");
    let err = TextTokenizer::from_file(&missing).unwrap_err();
    assert!(
        matches!(&err, AbbaError::Io { path, .. } if path == &missing.display().to_string()),
        "{err:?}"
    );
    let bad = temp_path("bad-tok", "json");
    std::fs::write(&bad, "{\"not\": \"a tokenizer\"}").unwrap();
    let err = TextTokenizer::from_file(&bad).unwrap_err();
    assert!(
        matches!(
            err,
            AbbaError::Format {
                format: "tokenizer.json",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string().lines().count(), 1);

    // A word-level tokenizer with no EOS spelling: resolve must say to set eos_token_id.
    let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},"unk_token":"[UNK]"}}"#;
    std::fs::write(&bad, json).unwrap();
    let tok = TextTokenizer::from_file(&bad).unwrap();
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(tok.encode("hello world").unwrap(), vec![1, 2]);
    let err = SpecialIds::resolve(&tok, None, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("set eos_token_id in the model's config.json"),
        "{err}"
    );
    let s = SpecialIds::resolve(&tok, None, Some(2)).unwrap();
    assert_eq!(
        s,
        SpecialIds {
            bos: None,
            eos: 2,
            pad: 2
        }
    );
}
