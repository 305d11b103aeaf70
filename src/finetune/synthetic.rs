//! The built-in synthetic tasks, so fine-tuning can be compared offline: GSM8K-style word problems
//! ([`super::arith`]), n-digit addition (`"347+582="` → `"929"`) and word reversal (`"night="` → `"thgin"`): short
//! prompts with exact answers. Reversal needs only letters, which a model pretrained on English text already
//! represents, so even a tiny byte-level base learns it well above chance.
//!
//! Splits never share a problem: word problems come from three seed streams; addition and reversal partition the
//! problems by a hash, so a test problem was never seen in training whatever the counts.

use rand::Rng;
use serde::Deserialize;

use super::arith::arithmetic_problems;
use super::data::Example;
use crate::error::{AbbaError, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyntheticTask {
    #[default]
    WordProblems,
    /// Two addends of up to `size` digits.
    Addition,
    /// A random lowercase word of 3 to `size` letters, reversed.
    Reverse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    /// The word problems' seed stream of this split (the offsets predate the test split's use by comparisons).
    fn stream(self, seed: u64) -> u64 {
        match self {
            Split::Train => seed,
            Split::Validation => seed.wrapping_add(0x5eed),
            Split::Test => seed.wrapping_add(0x7e57_5eed),
        }
    }

    /// Problems in tenths of the hash space of their two keys: 8 for training, 1 each for validation and test.
    fn owns(self, a: u64, b: u64) -> bool {
        let mut h = (a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
        match h % 10 {
            8 => self == Split::Validation,
            9 => self == Split::Test,
            _ => self == Split::Train,
        }
    }
}

/// The most digits an addend may have (sums stay far inside u64 and the pair space is never exhausted).
pub const MAX_DIGITS: usize = 9;
/// The longest word to reverse (its letters, base 26, fit one u64 hash key).
pub const MAX_LETTERS: usize = 12;

/// Checks a task's `size` before anything runs.
pub fn validate(task: SyntheticTask, size: usize) -> Result<()> {
    match task {
        SyntheticTask::Addition if !(1..=MAX_DIGITS).contains(&size) => {
            Err(AbbaError::InvalidArgument(format!(
                "addition with size = {size}: use 1 to {MAX_DIGITS} digits per addend"
            )))
        }
        SyntheticTask::Reverse if !(3..=MAX_LETTERS).contains(&size) => {
            Err(AbbaError::InvalidArgument(format!(
                "reverse with size = {size}: use words of up to 3 to {MAX_LETTERS} letters"
            )))
        }
        _ => Ok(()),
    }
}

/// `n` problems of `task` for `split`, the same for the same seed on every platform.
pub fn synthetic_problems(
    task: SyntheticTask,
    size: usize,
    n: usize,
    seed: u64,
    split: Split,
) -> Result<Vec<Example>> {
    validate(task, size)?;
    Ok(match task {
        SyntheticTask::WordProblems => arithmetic_problems(n, split.stream(seed)),
        SyntheticTask::Addition => addition_problems(size, n, seed, split),
        SyntheticTask::Reverse => reverse_problems(size, n, seed, split),
    })
}

fn reverse_problems(max_letters: usize, n: usize, seed: u64, split: Split) -> Vec<Example> {
    let mut rng = crate::rng::seeded(crate::rng::derive(seed, 0x5e7 + split as u64));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = rng.random_range(3..=max_letters);
        let word: String = (0..len)
            .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
            .collect();
        let key = word
            .bytes()
            .fold(0u64, |k, b| k * 27 + (b - b'a' + 1) as u64);
        if split.owns(key, len as u64) {
            out.push(Example {
                instruction: format!("{word}="),
                input: None,
                output: word.chars().rev().collect(),
            });
        }
    }
    out
}

fn addition_problems(digits: usize, n: usize, seed: u64, split: Split) -> Vec<Example> {
    let limit = 10u64.pow(digits as u32);
    // Each split draws from its own stream; the partition, not the streams, keeps the splits apart.
    let mut rng = crate::rng::seeded(crate::rng::derive(seed, 0xadd + split as u64));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (a, b) = (rng.random_range(0..limit), rng.random_range(0..limit));
        if split.owns(a, b) {
            out.push(Example {
                instruction: format!("{a}+{b}="),
                input: None,
                output: (a + b).to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_split_owns_some_one_digit_pairs_and_no_pair_is_shared() {
        for split in [Split::Train, Split::Validation, Split::Test] {
            let owned = (0..10)
                .flat_map(|a| (0..10).map(move |b| (a, b)))
                .filter(|&(a, b)| split.owns(a, b))
                .count();
            assert!(owned > 0, "{split:?} owns no 1-digit pair");
        }
        for a in 0..100 {
            for b in 0..100 {
                let owners = [Split::Train, Split::Validation, Split::Test]
                    .iter()
                    .filter(|s| s.owns(a, b))
                    .count();
                assert_eq!(owners, 1);
            }
        }
    }
}
