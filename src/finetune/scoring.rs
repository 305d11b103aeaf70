//! GSM8K-style scoring: the reference is the number after `####`, the prediction is the last number in the
//! model's greedy output, and they match when equal as numbers. This is how the ABBA paper (following the
//! MetaMath / LLM-Adapters evaluation scripts) scores GSM8K and MATH-style numeric answers.

/// The numbers in `text`, left to right, normalised: thousands commas removed, `-` kept, `+` dropped.
fn numbers(text: &str) -> impl Iterator<Item = String> + '_ {
    let b = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            // A sign counts when it is not a hyphen or operator between two words or numbers.
            let sign = match start.checked_sub(1).map(|j| b[j]) {
                Some(s @ (b'-' | b'+')) if start < 2 || !b[start - 2].is_ascii_alphanumeric() => {
                    Some(s)
                }
                _ => None,
            };
            let mut out = String::new();
            if sign == Some(b'-') {
                out.push('-');
            }
            while i < b.len() && b[i].is_ascii_digit() {
                out.push(b[i] as char);
                i += 1;
            }
            // Thousands groups: a comma followed by exactly three digits.
            while i + 4 <= b.len()
                && b[i] == b','
                && b[i + 1..i + 4].iter().all(u8::is_ascii_digit)
                && !b.get(i + 4).is_some_and(u8::is_ascii_digit)
            {
                out.extend(b[i + 1..i + 4].iter().map(|&c| c as char));
                i += 4;
            }
            // Decimals: a point followed by at least one digit (so a sentence's full stop is not taken).
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                out.push('.');
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    out.push(b[i] as char);
                    i += 1;
                }
            }
            return Some(out);
        }
        None
    })
}

/// The reference answer of a GSM8K solution: the first number after the last `####`, commas removed.
/// `None` when there is no `####` or no number after it.
pub fn reference_answer(gsm8k_answer: &str) -> Option<String> {
    let (_, tail) = gsm8k_answer.rsplit_once("####")?;
    numbers(tail.trim()).next()
}

/// The last number in a model's output (sign, thousands commas and decimals allowed), commas removed.
pub fn last_number(text: &str) -> Option<String> {
    numbers(text).last()
}

fn parse(s: &str) -> Option<f64> {
    s.trim()
        .replace(',', "")
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
}

/// Whether two numbers are equal as numbers (so "19", "19.0" and "19.00" match), within 1e-6.
/// Text that does not parse as a number matches nothing.
pub fn numbers_match(a: &str, b: &str) -> bool {
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if (x - y).abs() <= 1e-6)
}

/// Whether two answers are the same text once surrounding whitespace is trimmed.
pub fn exact_match(pred: &str, reference: &str) -> bool {
    pred.trim() == reference.trim()
}

/// Whether a model output is correct for a reference number: its last number matches numerically.
pub fn is_correct(output: &str, reference: &str) -> bool {
    last_number(output).is_some_and(|p| numbers_match(&p, reference))
}
