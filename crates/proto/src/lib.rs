//! Outpost's configuration schema, defined once as protobuf messages.
//!
//! A tour of the crate:
//! - [`config::v1`]: the generated prost types (`proto/outpost/config/v1/config.proto`), with
//!   serde impls that follow the proto3 JSON mapping (pbjson). The control plane stores them,
//!   the admin API takes them as JSON, the gRPC stream pushes them.
//! - [`gslb::v1`]: the GSLB server's schema (`proto/outpost/gslb/v1/gslb.proto`): zones, edge
//!   nodes, regions and steering records; loaded with [`load::parse_gslb_config`] and checked by
//!   [`validate_gslb`].
//! - [`controlplane::v1`]: the `ConfigWatch` gRPC service (tonic client and server) through
//!   which nodes receive releases and report what they applied; it carries [`pb::Config`].
//! - [`delta`]: a config as the changes from another (what the Watch stream sends a node that
//!   is close), and applying them.
//! - [`purge`]: purge requests in JSON, as the edge and the control plane take them.
//! - [`load`]: a config from YAML or JSON text, as a standalone edge reads it.
//! - [`expression`]: the `$variable` templates used in header values, keys and redirects.
//! - [`validate`]: checks a whole config and returns every error with its field path.
//!
//! This crate does no I/O: it turns bytes into checked values and nothing else.

pub mod config {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/outpost.config.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/outpost.config.v1.serde.rs"));
    }
}

pub mod gslb {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/outpost.gslb.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/outpost.gslb.v1.serde.rs"));
    }
}

pub mod controlplane {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(
            env!("OUT_DIR"),
            "/tonic/outpost.controlplane.v1.rs"
        ));
    }
}

pub mod delta;
pub mod expression;
pub mod load;
pub mod purge;
pub mod validate;
pub mod validate_gslb;

pub use config::v1 as pb;
pub use load::{LoadError, SourceFormat, parse_config, parse_gslb_config};
pub use validate::{FieldError, ValidationErrors, validate};
