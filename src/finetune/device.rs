//! `--device cpu|cuda|auto`: where tensors live. CUDA needs a build with `--features cuda`.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{AbbaError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// CUDA device 0 when this build has CUDA and a GPU answers, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = AbbaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            "auto" => Ok(DeviceChoice::Auto),
            other => Err(AbbaError::UnknownName {
                what: "device",
                name: other.to_string(),
                valid: vec!["cpu".into(), "cuda".into(), "auto".into()],
            }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Auto => "auto",
        })
    }
}

pub fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}

impl DeviceChoice {
    pub fn select(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if !cuda_built() => Err(AbbaError::Unsupported {
                what: "--device cuda".into(),
                message: "this abba was built without CUDA: rebuild with `cargo build --release --features cuda` \
                          (needs nvcc), or use --device cpu"
                    .into(),
            }),
            DeviceChoice::Cuda => Device::new_cuda(0).map_err(|e| AbbaError::Unsupported {
                what: "--device cuda".into(),
                message: format!("no usable GPU: {}", e.to_string().lines().next().unwrap_or("")),
            }),
            DeviceChoice::Auto if cuda_built() => Ok(Device::new_cuda(0).unwrap_or(Device::Cpu)),
            DeviceChoice::Auto => Ok(Device::Cpu),
        }
    }
}

pub fn device_name(d: &Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// f32 | bf16 | f16. Half precision is for CUDA; on the CPU it is slow and is refused.
pub fn parse_dtype(name: &str, device: &Device) -> Result<DType> {
    let dtype = match name {
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => {
            return Err(AbbaError::UnknownName {
                what: "dtype",
                name: other.to_string(),
                valid: vec!["f32".into(), "bf16".into(), "f16".into()],
            });
        }
    };
    if dtype != DType::F32 && device.is_cpu() {
        return Err(AbbaError::Unsupported {
            what: format!("dtype {name} on the CPU"),
            message:
                "candle's CPU kernels are slow in half precision: use dtype = \"f32\" on the CPU"
                    .into(),
        });
    }
    Ok(dtype)
}

/// How many spin iterations candle's CPU worker threads wait for the next op before they park, unless the
/// environment sets `CANDLE_BARRIER_POOL_SPIN_LIMIT`. candle's own default (25 000 pause instructions, about a
/// millisecond on current x86) keeps a core busy after every parallel elementwise op; the training step issues
/// such ops more often than that, so the pool's workers never sleep and take cores from the threads doing the
/// work (faer's and rayon's) — most visibly on machines with few cores or shared with other jobs.
pub const CPU_POOL_SPIN_LIMIT: u32 = 1_000;

/// Up to this many threads (`RAYON_NUM_THREADS`, else the cores available), candle's elementwise pool gets no
/// worker of its own and its ops run on the calling thread, unless the environment sets `CANDLE_NUM_THREADS`.
/// Its workers run beside faer's and rayon's, which do the products; on 2 cores the extra spinning thread cost
/// more than the split saved (bench finetune suite, 2 threads, medians of 3 runs: full fine-tuning 293 → 238 ms
/// per step, ABBA 298 → 272, LoRA and HiRA unchanged) and the pool serialises cells that run side by side.
/// Larger machines keep candle's default, where splitting memory-bound ops should pay (not measured here).
pub const CPU_POOL_INLINE_UP_TO: usize = 2;

/// Sets the defaults of [`CPU_POOL_SPIN_LIMIT`] and [`CPU_POOL_INLINE_UP_TO`] for candle's CPU pool where the
/// environment does not choose. Takes effect only before candle's pool starts (its first large elementwise op),
/// so the binary calls it first thing in `main`.
///
/// # Safety
/// Changes the process environment: call it while the process has a single thread.
pub unsafe fn set_cpu_pool_defaults() {
    const SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    const POOL: &str = "CANDLE_NUM_THREADS";
    if std::env::var_os(SPIN).is_none() {
        // SAFETY: the caller guarantees that no other thread reads or writes the environment.
        unsafe { std::env::set_var(SPIN, CPU_POOL_SPIN_LIMIT.to_string()) };
    }
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if std::env::var_os(POOL).is_none() && threads <= CPU_POOL_INLINE_UP_TO {
        // SAFETY: as above.
        unsafe { std::env::set_var(POOL, "1") };
    }
}
