//! Stable, cheap hashes: [`id_hash`] for record ids and cohort keys (persisted and used for
//! partitioning, so they must not change between builds), and FNV-1a [`Hasher`]s for maps keyed
//! by vehicle id or by such hashes. No dependencies on the rest of the crate.

use std::hash::{BuildHasherDefault, Hasher};

/// 64-bit FNV-1a over the concatenated parts: a stable hash for record ids (persisted, so it must
/// not change between builds). With ids unique per vehicle, a collision needs about 2^32 live ids.
pub fn id_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a as a [`Hasher`]: cheaper than SipHash for short keys such as vehicle ids. Not
/// resistant to deliberately colliding keys; the keys come from the fleet's own producers.
#[derive(Clone, Copy)]
pub struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`FnvHasher`]s, for maps keyed by vehicle id.
pub type FnvHashBuilder = BuildHasherDefault<FnvHasher>;

/// For maps keyed by [`id_hash`] values, which are hashes already: the key is its own hash.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut fnv = FnvHasher(self.0);
        fnv.write(bytes);
        self.0 = fnv.0;
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`IdHasher`]s.
pub type IdHashBuilder = BuildHasherDefault<IdHasher>;
