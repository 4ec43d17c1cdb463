//! The `ngx` table, built once per VM.

pub mod arg;
pub mod balancer;
mod c_function;
pub mod cache;
pub mod codec;
pub mod location;
pub mod misc;
pub mod output;
mod output_fast;
pub mod process;
pub mod re;
mod re_dfa;
pub mod req;
mod req_body;
pub mod resty_string;
pub mod shared;
mod shared_fast;
pub mod socket;
pub mod ssl;
pub mod thread;
mod var_fast;
