//! The candle forward of the methods whose update is more than a product of two factors: one file each. The
//! factor tensors come in factor-table order ([`crate::adapter::Method::factors`]).

pub mod chain;
pub mod dora;
pub mod kradapter;
pub mod lokr;
pub mod mora;
