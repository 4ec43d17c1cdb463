//! A load generator for `bench/cache-zipf.sh`: GETs of `/obj/<i>` whose index follows a Zipf
//! distribution, from a fixed seed, bounded by a request count and a deadline.
//!
//! ```sh
//! cargo run --release -p outpost-edge-node --example zipf_load -- \
//!   --url http://127.0.0.1:18702 --objects 50000 --s 1.0 --seed 7 --requests 200000 --conns 64
//! ```
//!
//! The whole sequence of indices is drawn up front from one seeded generator and the
//! connections take the next one in turn, so every peer given the same seed receives the same
//! multiset of requests (only their interleaving over connections differs). It prints one
//! line, `ZIPF {json}`: requests, errors, how many responses the cache's own header called a
//! hit (`X-Cache: HIT...` as the nginx and Varnish peers set it, or an RFC 9211 `Cache-Status`
//! with `hit`), duration, requests/s and latency percentiles of the successful requests.
//!
//! wrk cannot stop after a number of requests, and every peer must warm up on the same number.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use tokio::net::TcpStream;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    url: String,
    objects: u32,
    s: f64,
    seed: u64,
    requests: u64,
    conns: usize,
    threads: usize,
    max_seconds: u64,
    expect_bytes: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        objects: 50_000,
        s: 1.0,
        seed: 1,
        requests: 100_000,
        conns: 64,
        threads: 2,
        max_seconds: 120,
        expect_bytes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {v}: {e}");
        match flag.as_str() {
            "--url" => a.url = v.trim_end_matches('/').to_string(),
            "--objects" => a.objects = v.parse().map_err(|e| bad(&e))?,
            "--s" => a.s = v.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = v.parse().map_err(|e| bad(&e))?,
            "--requests" => a.requests = v.parse().map_err(|e| bad(&e))?,
            "--conns" => a.conns = v.parse().map_err(|e| bad(&e))?,
            "--threads" => a.threads = v.parse().map_err(|e| bad(&e))?,
            "--max-seconds" => a.max_seconds = v.parse().map_err(|e| bad(&e))?,
            "--expect-bytes" => a.expect_bytes = Some(v.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.url.is_empty() || a.objects == 0 || a.conns == 0 || a.threads == 0 {
        return Err("--url is required; --objects, --conns, --threads must be > 0".into());
    }
    Ok(a)
}

/// splitmix64: tiny, seedable, and good enough to sample a distribution.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Object indices 0..n, index i with probability proportional to 1/(i+1)^s.
fn zipf_sequence(n: u32, s: f64, seed: u64, len: u64) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(n as usize);
    let mut sum = 0.0;
    for k in 1..=n {
        sum += 1.0 / (k as f64).powf(s);
        cdf.push(sum);
    }
    let mut rng = SplitMix(seed);
    (0..len)
        .map(|_| {
            let u = rng.next_f64() * sum;
            cdf.partition_point(|&c| c < u).min(n as usize - 1) as u32
        })
        .collect()
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    hits: AtomicU64,
    cache_misses: AtomicU64,
    unlabelled: AtomicU64,
}

/// What the cache said about this response, from its own header.
fn is_hit(headers: &http::HeaderMap) -> Option<bool> {
    if let Some(v) = headers.get("x-cache").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_ascii_uppercase().starts_with("HIT"));
    }
    let v = headers.get("cache-status")?.to_str().ok()?;
    Some(v.split(';').any(|p| p.trim() == "hit"))
}

struct Shared {
    seq: Vec<u32>,
    next: AtomicU64,
    counts: Counts,
    deadline: Instant,
    deadline_hit: AtomicBool,
    authority: String,
    expect_bytes: Option<usize>,
}

async fn connection(sh: Arc<Shared>) -> Vec<u32> {
    let mut lat = Vec::new();
    let mut reconnects = 0;
    'outer: while reconnects < 100 {
        let Ok(stream) = TcpStream::connect(&sh.authority).await else {
            reconnects += 1;
            sh.counts.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(io).await else {
            reconnects += 1;
            continue;
        };
        tokio::spawn(conn);
        loop {
            let i = sh.next.fetch_add(1, Ordering::Relaxed);
            if i >= sh.seq.len() as u64 {
                break 'outer;
            }
            if Instant::now() >= sh.deadline {
                sh.deadline_hit.store(true, Ordering::Relaxed);
                break 'outer;
            }
            let req = Request::get(format!("/obj/{}", sh.seq[i as usize]))
                .header(http::header::HOST, &sh.authority)
                .body(Empty::<Bytes>::new())
                .expect("static request parts are valid");
            let t0 = Instant::now();
            // A stalled response must not hold the run past its deadline: it counts as an
            // error and the connection is replaced.
            let exchange = async {
                let (parts, body) = send.send_request(req).await.ok()?.into_parts();
                Some((parts, body.collect().await.ok()?.to_bytes()))
            };
            let Ok(Some((parts, body))) = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await
            else {
                sh.counts.errors.fetch_add(1, Ordering::Relaxed);
                reconnects += 1;
                continue 'outer;
            };
            let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
            let good = parts.status == http::StatusCode::OK
                && sh.expect_bytes.is_none_or(|n| n == body.len());
            if !good {
                sh.counts.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            lat.push(us);
            sh.counts.ok.fetch_add(1, Ordering::Relaxed);
            match is_hit(&parts.headers) {
                Some(true) => &sh.counts.hits,
                Some(false) => &sh.counts.cache_misses,
                None => &sh.counts.unlabelled,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
    }
    lat
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zipf_load: {e}");
            std::process::exit(2);
        }
    };
    let Some(authority) = args.url.strip_prefix("http://").map(str::to_string) else {
        eprintln!("zipf_load: --url must be http://host:port");
        std::process::exit(2);
    };
    let seq = zipf_sequence(args.objects, args.s, args.seed, args.requests);
    let distinct = {
        let mut seen = vec![false; args.objects as usize];
        seq.iter().for_each(|&i| seen[i as usize] = true);
        seen.iter().filter(|&&b| b).count()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let start = Instant::now();
    let sh = Arc::new(Shared {
        seq,
        next: AtomicU64::new(0),
        counts: Counts::default(),
        deadline: start + Duration::from_secs(args.max_seconds),
        deadline_hit: AtomicBool::new(false),
        authority,
        expect_bytes: args.expect_bytes,
    });
    let mut lat: Vec<u32> = rt.block_on(async {
        let tasks: Vec<_> = (0..args.conns)
            .map(|_| tokio::spawn(connection(sh.clone())))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(v) = t.await {
                all.extend(v);
            }
        }
        all
    });
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let c = &sh.counts;
    let ok = c.ok.load(Ordering::Relaxed);
    println!(
        "ZIPF {{\"requests\":{},\"ok\":{ok},\"errors\":{},\"hits\":{},\"cache_misses\":{},\
         \"unlabelled\":{},\"distinct\":{distinct},\"duration_s\":{secs:.3},\"rps\":{:.1},\
         \"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"deadline_hit\":{}}}",
        ok + c.errors.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.hits.load(Ordering::Relaxed),
        c.cache_misses.load(Ordering::Relaxed),
        c.unlabelled.load(Ordering::Relaxed),
        ok as f64 / secs,
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0),
        sh.deadline_hit.load(Ordering::Relaxed),
    );
}
