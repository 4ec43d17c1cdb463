//! Outpost's GSLB: an authoritative DNS server that answers with healthy edge nodes near the
//! client, and changes its answers by itself within a probe interval of a node failing.
//!
//! A tour of the crate:
//! - [`geo`]: regions, great-circle distances, the CIDR → region table.
//! - [`select`]: the answer for a GSLB record, a pure function of plan, health, client and a
//!   random number. Dense unit tests live here.
pub mod geo;
pub mod select;
