//! RFC 9111 decisions as pure functions: no I/O, time passed in.
