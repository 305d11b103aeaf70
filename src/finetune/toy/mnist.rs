//! MNIST-style digits from a CSV file (optionally gzip-compressed): one image per row, the pixel values 0–255
//! followed by the label 0–9, no header. Pixels are scaled to [0, 1].
//!
//! The split into train and test is drawn per class from a seed, so both phases of the toy see balanced classes
//! and the same file and seed always give the same split.

use std::io::BufRead;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;

use crate::error::{AbbaError, Result};
use crate::rng::seeded;

/// Pixels of a 28×28 MNIST image.
pub const MNIST_PIXELS: usize = 784;
/// Classes (digits 0–9).
pub const CLASSES: usize = 10;

/// Images as a row-major `len × pixels` buffer of values in [0, 1], with their labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Digits {
    pub pixels: usize,
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Digits {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.pixels..(i + 1) * self.pixels]
    }

    fn push(&mut self, image: &[f32], label: u8) {
        self.images.extend_from_slice(image);
        self.labels.push(label);
    }

    /// The images whose label `keep` accepts, in order.
    pub fn filter(&self, keep: impl Fn(u8) -> bool) -> Digits {
        let mut out = Digits {
            pixels: self.pixels,
            ..Digits::default()
        };
        for i in (0..self.len()).filter(|&i| keep(self.labels[i])) {
            out.push(self.image(i), self.labels[i]);
        }
        out
    }

    /// Images (`len × pixels`, `dtype`) and labels (u32) as tensors.
    pub fn to_tensors(&self, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let x = Tensor::from_slice(&self.images, (self.len(), self.pixels), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        let labels: Vec<u32> = self.labels.iter().map(|&l| u32::from(l)).collect();
        let y = Tensor::from_vec(labels, self.len(), device)?;
        Ok((x, y))
    }
}

/// Reads `path` (`.gz` is decompressed, by content, not by name) expecting `pixels` values and a label per row.
/// Blank lines are skipped. Errors name the file, and for bad rows the line.
pub fn load_digits(path: &Path, pixels: usize) -> Result<Digits> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| AbbaError::Io {
        path: name.clone(),
        message: e.to_string(),
    };
    let reader = crate::io::open_decompressed(path).map_err(|e| AbbaError::Io {
        path: name.clone(),
        message: format!("{e}: set `data` to the MNIST CSV (.csv or .csv.gz)"),
    })?;
    let mut digits = Digits {
        pixels,
        ..Digits::default()
    };
    let mut row = Vec::with_capacity(pixels);
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| AbbaError::Data {
            path: name.clone(),
            line: index + 1,
            message,
        };
        parse_row(line, pixels, &mut row).map_err(bad)?;
        let label = row[pixels] as u8;
        digits.push(&row[..pixels], label);
    }
    if digits.is_empty() {
        return Err(AbbaError::Format {
            path: name,
            format: "digits CSV",
            message: "no rows: expected one image per line".into(),
        });
    }
    Ok(digits)
}

/// Fills `row` with the scaled pixels then the label (as f32), or says what is wrong with the line.
fn parse_row(line: &str, pixels: usize, row: &mut Vec<f32>) -> std::result::Result<(), String> {
    row.clear();
    for (i, field) in line.split(',').enumerate() {
        let field = field.trim();
        let value: f64 = field
            .parse()
            .map_err(|_| format!("field {} is '{field}', not a number", i + 1))?;
        if i < pixels {
            if !(0.0..=255.0).contains(&value) {
                return Err(format!("pixel {} is {value}: pixels must be 0–255", i + 1));
            }
            row.push((value / 255.0) as f32);
        } else {
            if value.fract() != 0.0 || !(0.0..CLASSES as f64).contains(&value) {
                return Err(format!("label is {value}: labels must be digits 0–9"));
            }
            row.push(value as f32);
        }
    }
    if row.len() != pixels + 1 {
        return Err(format!(
            "{} fields: expected {pixels} pixels and a label",
            row.len()
        ));
    }
    Ok(())
}

/// Train and test images, disjoint.
#[derive(Clone, Debug)]
pub struct Split {
    pub train: Digits,
    pub test: Digits,
}

/// Per class, shuffles that class's images with `seed` and takes the first `train_per_class` for training and the
/// next `test_per_class` for testing. Fails if a class present in the file has too few images; absent classes are
/// left out (the toy checks that it has the digits it needs).
pub fn split_per_class(
    digits: &Digits,
    train_per_class: usize,
    test_per_class: usize,
    seed: u64,
) -> Result<Split> {
    let empty = || Digits {
        pixels: digits.pixels,
        ..Digits::default()
    };
    let (mut train, mut test) = (empty(), empty());
    let mut rng = seeded(seed);
    for class in 0..CLASSES as u8 {
        let mut idx: Vec<usize> = (0..digits.len())
            .filter(|&i| digits.labels[i] == class)
            .collect();
        if idx.is_empty() {
            continue;
        }
        if idx.len() < train_per_class + test_per_class {
            return Err(AbbaError::InvalidArgument(format!(
                "digit {class} has {} images but the split asks for {train_per_class} train + {test_per_class} test: lower train_per_class or test_per_class",
                idx.len()
            )));
        }
        idx.shuffle(&mut rng);
        for &i in &idx[..train_per_class] {
            train.push(digits.image(i), class);
        }
        for &i in &idx[train_per_class..train_per_class + test_per_class] {
            test.push(digits.image(i), class);
        }
    }
    Ok(Split { train, test })
}
