//! candle layers: a frozen linear projection that may carry one trainable adapter.

pub mod adapter;
pub mod context;
pub mod frozen;
pub mod linear;
pub mod methods;
pub mod products;

pub use adapter::AdapterWeights;
pub use context::ForwardCtx;
pub use linear::AdaptedLinear;
