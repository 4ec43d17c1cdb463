//! The proxy: the request pipeline, header forwarding, bodies, the upstream attempt loop,
//! protocol upgrades, access logging and the error type of the request path.

pub mod access_log;
pub mod body;
pub mod body_filter;
pub mod cache_phase;
pub mod error;
pub mod forward;
pub mod handler;
pub mod internal_redirect;
pub mod lua_balancer;
pub mod lua_body;
pub mod lua_cache;
pub mod lua_phase;
pub mod lua_ssl;
pub mod lua_stream;
pub mod subrequest;
pub mod upgrade;
pub mod upstream_call;
