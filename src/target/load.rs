//! Real matrices from files: safetensors tensors, grey-scale images and `.npy` arrays. Each reader reaches its
//! format through one function, so the crate behind it can be swapped.

use std::path::Path;

use ndarray::Array2;
use safetensors::{Dtype, SafeTensors};

use crate::error::{AbbaError, Result};

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| AbbaError::io(path, e))
}

fn format_err(path: &Path, format: &'static str, message: impl Into<String>) -> AbbaError {
    AbbaError::Format {
        path: path.display().to_string(),
        format,
        message: message.into(),
    }
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

pub(super) fn decode_floats(path: &Path, dtype: Dtype, data: &[u8]) -> Result<Vec<f64>> {
    let chunks = |k: usize| data.chunks_exact(k);
    Ok(match dtype {
        Dtype::F64 => chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F32 => chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::BF16 => chunks(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
            .collect(),
        Dtype::F16 => chunks(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64)
            .collect(),
        other => {
            return Err(format_err(
                path,
                "safetensors",
                format!("tensor dtype {other:?} is not a float type"),
            ));
        }
    })
}

/// Names of the 2-D tensors in a safetensors file, sorted.
pub fn safetensors_2d_names(path: &Path) -> Result<Vec<String>> {
    let bytes = read(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format_err(path, "safetensors", e.to_string()))?;
    let mut names: Vec<String> = st
        .iter()
        .filter(|(_, t)| t.shape().len() == 2)
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// The 2-D tensor `name` of a safetensors file, as f64.
pub fn load_safetensors(path: &Path, name: &str) -> Result<Array2<f64>> {
    let bytes = read(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format_err(path, "safetensors", e.to_string()))?;
    let Ok(t) = st.tensor(name) else {
        let mut valid: Vec<String> = st
            .iter()
            .filter(|(_, t)| t.shape().len() == 2)
            .map(|(n, _)| n.to_string())
            .collect();
        valid.sort();
        return Err(AbbaError::UnknownName {
            what: "2-D tensor",
            name: name.into(),
            valid,
        });
    };
    let shape = t.shape().to_vec();
    if shape.len() != 2 {
        return Err(format_err(
            path,
            "safetensors",
            format!("tensor '{name}' has shape {shape:?}, not 2-D"),
        ));
    }
    let values = decode_floats(path, t.dtype(), t.data())?;
    Array2::from_shape_vec((shape[0], shape[1]), values)
        .map_err(|e| format_err(path, "safetensors", format!("tensor '{name}': {e}")))
}

/// A PNG or JPEG as a grey-scale matrix in [0, 1] (rows = image rows).
pub fn load_image(path: &Path) -> Result<Array2<f64>> {
    let img = image::open(path).map_err(|e| match e {
        image::ImageError::IoError(io) => AbbaError::io(path, io),
        other => format_err(path, "image (PNG/JPEG)", other.to_string()),
    })?;
    let grey = img.to_luma8();
    let (w, h) = grey.dimensions();
    Ok(Array2::from_shape_fn((h as usize, w as usize), |(i, j)| {
        grey.get_pixel(j as u32, i as u32)[0] as f64 / 255.0
    }))
}

/// A 2-D `.npy` array of `<f4` or `<f8` (NumPy format versions 1–3).
pub fn load_npy(path: &Path) -> Result<Array2<f64>> {
    let bytes = read(path)?;
    let bad = |m: &str| format_err(path, "npy", m.to_string());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => return Err(bad(&format!("unsupported format version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| bad("truncated header"))?;
    let header = String::from_utf8_lossy(header);
    let field = |key: &str| -> Option<String> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        let end = if rest.starts_with('(') {
            rest.find(')')? + 1
        } else {
            rest.find([',', '}'])?
        };
        Some(rest[..end].trim().to_string())
    };
    let descr = field("descr").ok_or_else(|| bad("header has no 'descr'"))?;
    let fortran =
        field("fortran_order").ok_or_else(|| bad("header has no 'fortran_order'"))? == "True";
    let shape_text = field("shape").ok_or_else(|| bad("header has no 'shape'"))?;
    let dims: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(&format!("cannot parse shape {shape_text}")))?;
    if dims.len() != 2 {
        return Err(bad(&format!("array has shape {shape_text}, not 2-D")));
    }
    let data = &bytes[start + header_len..];
    let values: Vec<f64> = match descr.trim_matches('\'') {
        "<f8" => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "<f4" => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => {
            return Err(bad(&format!(
                "dtype {other} is not supported: save as float32 or float64"
            )));
        }
    };
    if values.len() != dims[0] * dims[1] {
        return Err(bad(&format!(
            "holds {} values, shape {shape_text} needs {}",
            values.len(),
            dims[0] * dims[1]
        )));
    }
    let (m, n) = (dims[0], dims[1]);
    Ok(if fortran {
        Array2::from_shape_vec((n, m), values)
            .expect("length checked")
            .reversed_axes()
            .as_standard_layout()
            .to_owned()
    } else {
        Array2::from_shape_vec((m, n), values).expect("length checked")
    })
}
