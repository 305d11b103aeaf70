//! Seeded, portable random numbers: ChaCha8 gives the same stream on every platform and thread count.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub type SeededRng = ChaCha8Rng;

pub fn seeded(seed: u64) -> SeededRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A child seed for stream `stream` of `seed`, so parallel work draws independent, reproducible numbers.
pub fn derive(seed: u64, stream: u64) -> u64 {
    // SplitMix64 finaliser: cheap, well mixed, stable forever.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
