//! Boxing a large future where it is made.
//!
//! `Box::pin(f())` makes the future on the stack and then copies all of it into the box. An
//! async function's future is as large as its largest state, several KiB for the request
//! pipeline, though a new one holds only its arguments. Allocating first and writing the call's
//! result into the allocation lets the compiler build the future in place. In the request
//! path's profile the copy was the largest single item.

/// `in_box!(f(args))`: like `Box::pin(f(args))`, with the future built in its box.
#[macro_export]
macro_rules! in_box {
    ($future:expr) => {{
        // Bound first, so that an expected `dyn Future` box does not reach the allocation.
        let boxed = ::std::boxed::Box::write(::std::boxed::Box::new_uninit(), $future);
        ::std::boxed::Box::into_pin(boxed)
    }};
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_boxed_future_runs_as_the_future_would() {
        async fn add(a: u32, b: u32) -> u32 {
            tokio::task::yield_now().await;
            a + b
        }
        let boxed: std::pin::Pin<Box<_>> = in_box!(add(2, 3));
        assert_eq!(boxed.await, 5);
    }
}
