//! The server side: listening sockets, TLS, and the workers that accept and serve
//! connections.

pub mod conn_watch;
pub mod listener;
pub mod tls;
pub mod worker;
