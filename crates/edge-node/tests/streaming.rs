//! Large bodies stream through the edge with bounded memory. Alone in its test binary so that
//! no other test's allocations are counted in the process's RSS.

mod support;

use std::time::Duration;

use support::*;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_upload_and_download_stream_through_with_bounded_memory() {
    use futures_util::StreamExt;
    const SIZE: u64 = 256 << 20;
    let origin = Origin::start("origin").await;
    let node = edge_in_front_of(origin.addr).await;
    let base = base_url(&node);
    let c = client();
    let before = rss_bytes();
    let mut peak = before;

    let mut stream = c
        .get(format!("{base}/bytes/{SIZE}"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
        if got % (16 << 20) < 65536 {
            peak = peak.max(rss_bytes());
        }
    }
    assert_eq!(got, SIZE);

    let chunk = bytes::Bytes::from(vec![b'u'; 64 * 1024]);
    let upload = futures_util::stream::iter(
        (0..SIZE / chunk.len() as u64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let sent = c
        .post(format!("{base}/upload"))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sent, SIZE.to_string());
    peak = peak.max(rss_bytes());
    // The whole test process (client, edge and origin) grows by less than 64 MiB while
    // 512 MiB pass through.
    assert!(
        peak - before < 64 << 20,
        "grew by {} MiB",
        (peak - before) >> 20
    );
    node.shutdown(Duration::from_secs(1)).await;
}
