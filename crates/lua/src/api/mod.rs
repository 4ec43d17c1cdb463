//! The `ngx` table, built once per VM.

pub mod arg;
pub mod balancer;
pub mod cache;
pub mod codec;
pub mod location;
pub mod misc;
pub mod output;
pub mod process;
pub mod re;
mod re_dfa;
pub mod req;
mod req_body;
pub mod resty_string;
pub mod shared;
pub mod socket;
pub mod ssl;
pub mod thread;
