//! # abba
//!
//! Hadamard-product adapters — ABBA (ΔW = s·(B1A1)⊙(B2A2)), HiRA and LoRA — with proven gradients, SVD-based
//! initialisation and the Khatri–Rao forward path.
//!
//! ```
//! use abba::adapter::{init::{init_abba, AbbaInit, InitOptions}, scaling::AbbaScale, Adapter};
//! use abba::rng::seeded;
//! use ndarray::Array2;
//!
//! let mut rng = seeded(0);
//! let w0 = abba::adapter::init::gaussian::<f64, _>(64, 48, 1.0, &mut rng);
//! let init = init_abba(w0.view(), 4, 4, AbbaScale::Paper { alpha: 16.0 }, AbbaInit::Paper,
//!                      InitOptions::default(), &mut rng).unwrap();
//! assert_eq!(init.adapter.num_params(), (4 + 4) * (64 + 48));
//! assert!(init.adapter.delta().iter().all(|&x| x == 0.0)); // ΔW = 0 at step 0
//! let g = Array2::<f64>::ones((64, 48));
//! assert!(init.adapter.grads(g.view()).unwrap()[2].iter().any(|&x| x != 0.0)); // yet B2 learns
//! ```

pub mod adapter;
pub mod bench;
pub mod budget;
pub mod compare;
pub mod error;
pub mod finetune;
pub mod fit;
pub mod io;
pub mod linalg;
pub mod metrics;
pub mod process;
pub mod report;
pub mod rng;
pub mod rows;
pub mod stats;
pub mod study;
pub mod target;

pub use error::AbbaError;
