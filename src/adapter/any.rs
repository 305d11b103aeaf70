//! One value that holds an adapter of any method, for code that must know the family (alternating least squares,
//! fused fitting steps) and for initialisation, which returns whichever family a [`super::Method`] names.

use super::{Abba, AbbaChain, Adapter, Dora, Full, Hira, KrAdapter, Lokr, Lora, Mora};
use crate::linalg::Real;

#[derive(Clone, Debug)]
pub enum AnyAdapter<T> {
    Full(Full<T>),
    Lora(Lora<T>),
    Hira(Hira<T>),
    Abba(Abba<T>),
    Chain(AbbaChain<T>),
    Dora(Dora<T>),
    Lokr(Lokr<T>),
    Mora(Mora<T>),
    Kradapter(KrAdapter<T>),
}

impl<T: Real> AnyAdapter<T> {
    pub fn as_adapter(&self) -> &dyn Adapter<T> {
        match self {
            AnyAdapter::Full(a) => a,
            AnyAdapter::Lora(a) => a,
            AnyAdapter::Hira(a) => a,
            AnyAdapter::Abba(a) => a,
            AnyAdapter::Chain(a) => a,
            AnyAdapter::Dora(a) => a,
            AnyAdapter::Lokr(a) => a,
            AnyAdapter::Mora(a) => a,
            AnyAdapter::Kradapter(a) => a,
        }
    }

    pub fn as_adapter_mut(&mut self) -> &mut dyn Adapter<T> {
        match self {
            AnyAdapter::Full(a) => a,
            AnyAdapter::Lora(a) => a,
            AnyAdapter::Hira(a) => a,
            AnyAdapter::Abba(a) => a,
            AnyAdapter::Chain(a) => a,
            AnyAdapter::Dora(a) => a,
            AnyAdapter::Lokr(a) => a,
            AnyAdapter::Mora(a) => a,
            AnyAdapter::Kradapter(a) => a,
        }
    }
}
