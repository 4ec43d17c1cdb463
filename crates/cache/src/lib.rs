//! The edge's HTTP cache.
//!
//! - [`policy`]: RFC 9111 decisions (storability, freshness, age, validation, `Vary`,
//!   invalidation, `Cache-Status`) as pure functions of headers and times.
//! - [`Tier`]: the storage trait, with a memory tier on moka ([`MemoryTier`]) and a disk tier
//!   with an index ([`DiskTier`]).
//! - [`Cache`]: lookups through both tiers, fills with request collapsing ([`Fill`]), purges.

mod admission;
mod body;
mod disk;
mod fill;
mod key;
mod memory;
mod object;
pub mod policy;
mod store;
mod tier;
mod victims;

pub use body::CachedBody;
pub use disk::{DiskTier, DiskWriter, SharedDisk};
pub use fill::{Fill, FillEnd};
pub use key::KeyHash;
pub use memory::MemoryTier;
pub use object::ObjectMeta;
pub use store::{Cache, CacheSettings, FillHandle, FillRole, Lookup, PurgeSelector};
pub use tier::{BodySource, StorageError, Stored, Tier, TierWriter};
