//! The server side: listening sockets, TLS, and the workers that accept and serve
//! connections.

pub mod conn_watch;
pub(crate) mod field_name;
pub(crate) mod h1_head;
mod http1;
mod http_date;
pub mod listener;
pub mod tls;
pub mod worker;
