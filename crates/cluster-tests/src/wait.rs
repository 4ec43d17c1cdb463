//! Waiting for a condition: polled, bounded by a deadline and by a number of attempts. The
//! scenarios never sleep to let something happen and never assert on how long it took; they
//! wait until it has happened, and fail with what they were waiting for when it does not.

use std::future::Future;
use std::time::{Duration, Instant};

/// Time between two attempts.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// The most attempts any wait makes, however long its limit.
pub const MAX_ATTEMPTS: u32 = 5_000;

/// Polls `check` until it returns `Some`, for at most `limit` (each attempt is cut off at the
/// deadline too). None when the deadline or the attempt count runs out.
pub async fn poll_until<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    for _ in 0..MAX_ATTEMPTS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Ok(Some(v)) = tokio::time::timeout(left, check()).await {
            return Some(v);
        }
        tokio::time::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
    None
}

/// [`poll_until`], panicking with `what` when it runs out.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(limit, check).await {
        Some(v) => v,
        None => panic!("timed out after {limit:?} waiting until {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_the_first_value_found() {
        let mut n = 0;
        let got = poll_until(Duration::from_secs(5), || {
            n += 1;
            let v = n;
            async move { (v == 3).then_some(v) }
        })
        .await;
        assert_eq!(got, Some(3));
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let got: Option<()> = poll_until(Duration::from_millis(120), || async { None }).await;
        assert_eq!(got, None);
    }

    #[tokio::test]
    async fn cuts_a_slow_attempt_off_at_the_deadline() {
        let got: Option<()> = poll_until(Duration::from_millis(100), || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Some(())
        })
        .await;
        assert_eq!(got, None);
    }
}
