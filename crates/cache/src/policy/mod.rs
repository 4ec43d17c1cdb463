//! RFC 9111 decisions as pure functions: no I/O, time passed in.
//!
//! - [`directives`]: `Cache-Control`, and `CDN-Cache-Control`/`Surrogate-Control` for a CDN.
//! - [`storable`]: may a response be stored (§3)?
//! - [`freshness`] and [`age`]: how long it stays fresh (§4.2.1, §4.2.2) and how old it is
//!   (§4.2.3).
//! - [`lookup`]: serve, serve stale, revalidate or 504 (§4.2.4, §5.2.1, RFC 5861).
//! - [`validation`] and [`range`]: conditional requests both ways, 304 merging, byte ranges.
//! - [`vary`]: secondary keys (§4.1); [`invalidation`]: unsafe methods (§4.4).
//! - [`cache_status`]: the `Cache-Status` field (RFC 9211).

pub mod age;
pub mod cache_status;
pub mod directives;
pub mod freshness;
pub mod http_date;
pub mod invalidation;
pub mod lookup;
pub mod range;
pub mod storable;
mod structured;
pub mod validation;
pub mod vary;

pub use age::current_age;
pub use cache_status::{CacheStatus, Fwd};
pub use directives::{
    FieldScope, MaxStale, RequestDirectives, ResponseDirectives, Source, Target, parse_request,
    parse_response,
};
pub use freshness::{StoreOptions, freshness_lifetime};
pub use invalidation::invalidated_uris;
pub use lookup::{Decision, Lookup, StoredFacts, StoredView, lookup_decision, lookup_with_facts};
pub use range::{RangeDecision, range_for};
pub use storable::{NotStorable, Storable, storable};
pub use validation::{
    evaluate_client_conditional, merge_not_modified, not_modified_headers, revalidation_headers,
};
pub use vary::{VaryFields, secondary_key, vary_fields};
