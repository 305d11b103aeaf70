//! Synthetic GSM8K-style arithmetic word problems, so fine-tuning can be demonstrated and tested offline.
//!
//! Answers follow GSM8K's layout (working lines, then `#### N`), so the same reader, prompt and scorer serve both.
//! Every intermediate and final value is a whole number between 0 and 200.

use std::path::Path;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::Serialize;

use super::data::Example;
use crate::error::{AbbaError, Result};
use crate::rng::SeededRng;

/// (name, subject pronoun, object pronoun, possessive).
const PEOPLE: &[(&str, &str, &str, &str)] = &[
    ("Mia", "She", "her", "her"),
    ("Liam", "He", "him", "his"),
    ("Ava", "She", "her", "her"),
    ("Noah", "He", "him", "his"),
    ("Sofia", "She", "her", "her"),
    ("Ethan", "He", "him", "his"),
    ("Zara", "She", "her", "her"),
    ("Omar", "He", "him", "his"),
    ("Priya", "She", "her", "her"),
    ("Mateo", "He", "him", "his"),
    ("Hana", "She", "her", "her"),
    ("Kofi", "He", "him", "his"),
];

const OBJECTS: &[&str] = &[
    "apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "cards", "coins",
    "balloons", "crayons", "stamps",
];

/// Containers for multiplication and division problems.
const CONTAINERS: &[&str] = &["boxes", "bags", "packs", "jars", "baskets"];

const GAIN_VERBS: &[&str] = &["buys", "finds", "picks up", "wins", "collects"];
const LOSS_VERBS: &[&str] = &["gives away", "loses", "sells", "donates", "trades away"];

struct Scene {
    name: &'static str,
    he: &'static str,
    him: &'static str,
    his: &'static str,
    friend: &'static str,
    obj: &'static str,
}

impl Scene {
    fn draw(rng: &mut SeededRng) -> Scene {
        let i = rng.random_range(0..PEOPLE.len());
        // A friend who is not the protagonist.
        let j = (i + rng.random_range(1..PEOPLE.len())) % PEOPLE.len();
        let (name, he, him, his) = PEOPLE[i];
        Scene {
            name,
            he,
            him,
            his,
            friend: PEOPLE[j].0,
            obj: OBJECTS.choose(rng).copied().unwrap_or("apples"),
        }
    }

    /// Lower-case subject pronoun, for mid-sentence use.
    fn he_lc(&self) -> String {
        self.he.to_lowercase()
    }
}

fn pick(rng: &mut SeededRng, words: &[&'static str]) -> &'static str {
    words.choose(rng).copied().unwrap_or(words[0])
}

fn answer(lines: &[String], result: u32) -> String {
    format!("{}\n#### {result}", lines.join("\n"))
}

fn one_problem(rng: &mut SeededRng) -> Example {
    let s = Scene::draw(rng);
    let (name, he, obj) = (s.name, s.he, s.obj);
    let he_lc = s.he_lc();
    let (instruction, output) = match rng.random_range(0..6) {
        0 => {
            let (a, b) = (rng.random_range(2..=120), rng.random_range(1..=80));
            let verb = pick(rng, GAIN_VERBS);
            (
                format!(
                    "{name} has {a} {obj}. {he} {verb} {b} more. How many {obj} does {he_lc} have now?"
                ),
                answer(&[format!("{a} + {b} = {}", a + b)], a + b),
            )
        }
        1 => {
            let a = rng.random_range(5..=200);
            let b = rng.random_range(1..=a);
            let verb = pick(rng, LOSS_VERBS);
            (
                format!(
                    "{name} has {a} {obj} in {} collection. {he} {verb} {b} of them. How many {obj} does {he_lc} have left?",
                    s.his
                ),
                answer(&[format!("{a} - {b} = {}", a - b)], a - b),
            )
        }
        2 => {
            let (a, b) = (rng.random_range(2..=12), rng.random_range(2..=15));
            let box_ = pick(rng, CONTAINERS);
            (
                format!(
                    "{name} buys {a} {box_} of {obj}. Each one holds {b} {obj}. How many {obj} does {he_lc} buy in total?"
                ),
                answer(&[format!("{a} * {b} = {}", a * b)], a * b),
            )
        }
        3 => {
            let (b, c) = (rng.random_range(2..=10), rng.random_range(1..=20));
            let a = b * c;
            (
                format!(
                    "{name} has {a} {obj} and shares them equally among {b} friends. How many {obj} does each friend get?"
                ),
                answer(&[format!("{a} / {b} = {c}")], c),
            )
        }
        4 => {
            let (a, b) = (rng.random_range(2..=100), rng.random_range(1..=100));
            let sum = a + b;
            let c = rng.random_range(1..=sum);
            let verb = pick(rng, GAIN_VERBS);
            (
                format!(
                    "{name} has {a} {obj}. {he} {verb} {b} more and then gives {c} to {}. How many {obj} does {he_lc} have now?",
                    s.friend
                ),
                answer(
                    &[
                        format!("{a} + {b} = {sum}"),
                        format!("{sum} - {c} = {}", sum - c),
                    ],
                    sum - c,
                ),
            )
        }
        _ => {
            let (a, b, c) = (
                rng.random_range(2..=10),
                rng.random_range(2..=10),
                rng.random_range(1..=100),
            );
            let box_ = pick(rng, CONTAINERS);
            let prod = a * b;
            (
                format!(
                    "{name} already has {c} {obj}. {} gives {} {a} {box_} with {b} {obj} in each. How many {obj} does {} have now?",
                    s.friend, s.him, s.name
                ),
                answer(
                    &[
                        format!("{a} * {b} = {prod}"),
                        format!("{prod} + {c} = {}", prod + c),
                    ],
                    prod + c,
                ),
            )
        }
    };
    Example {
        instruction,
        input: None,
        output,
    }
}

/// One JSONL line, in GSM8K's key order.
#[derive(Serialize)]
struct Line<'a> {
    question: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a str>,
    answer: &'a str,
}

/// `n` arithmetic word problems, the same for the same seed on every platform.
pub fn arithmetic_problems(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = crate::rng::seeded(seed);
    (0..n).map(|_| one_problem(&mut rng)).collect()
}

/// Writes examples as GSM8K-style JSONL (`{"question", "answer"}`, plus `"input"` for examples that have one),
/// atomically: a temporary file in the same directory is renamed into place, so readers never see half a file.
pub fn write_jsonl(path: &Path, examples: &[Example]) -> Result<()> {
    if examples.is_empty() {
        return Err(AbbaError::InvalidArgument(format!(
            "no examples to write to {}: generate at least one",
            path.display()
        )));
    }
    let mut text = String::new();
    for ex in examples {
        let line = Line {
            question: &ex.instruction,
            input: ex.input.as_deref(),
            answer: &ex.output,
        };
        let json = serde_json::to_string(&line).map_err(|e| {
            AbbaError::InvalidArgument(format!("cannot serialise an example ({e}): check its text"))
        })?;
        text.push_str(&json);
        text.push('\n');
    }
    crate::io::write_atomic(path, text.as_bytes())
}
