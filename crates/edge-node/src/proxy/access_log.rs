//! The access log: nginx's `combined` format or one JSON object per line, written by a
//! dedicated thread so a slow disk never stalls a worker (lines are dropped, and counted, if
//! it falls far behind).

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::Version;

use super::upstream_call::UpstreamInfo;
use crate::config::AccessLogFormat;

pub struct LogRecord {
    pub client: IpAddr,
    pub method: String,
    pub target: String,
    pub version: Version,
    pub status: u16,
    pub referer: String,
    pub user_agent: String,
    pub host: String,
    pub application: String,
    pub request_id: String,
    pub upstream: UpstreamInfo,
    pub started: Instant,
}

pub fn format_line(format: AccessLogFormat, r: &LogRecord, sent: u64, complete: bool) -> String {
    let now = SystemTime::now();
    let version = match r.version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    match format {
        AccessLogFormat::Json => {
            let v = serde_json::json!({
                "time": time_iso8601(now),
                "remote_addr": r.client.to_string(),
                "request_method": r.method,
                "request_uri": r.target,
                "server_protocol": version,
                "host": r.host,
                "status": r.status,
                "body_bytes_sent": sent,
                "request_time": r.started.elapsed().as_secs_f64(),
                "http_referer": r.referer,
                "http_user_agent": r.user_agent,
                "application": r.application,
                "request_id": r.request_id,
                "upstream_addr": r.upstream.addr.map(|a| a.to_string()),
                "upstream_status": r.upstream.status,
                "upstream_response_time": r.upstream.response_time.map(|d| d.as_secs_f64()),
                "upstream_tries": r.upstream.tries,
                "complete": complete,
            });
            let mut s = v.to_string();
            s.push('\n');
            s
        }
        _ => format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"\n",
            r.client,
            time_local(now),
            r.method,
            r.target,
            version,
            r.status,
            sent,
            escape(&r.referer),
            escape(&r.user_agent)
        ),
    }
}

/// nginx escapes `"`, `\` and control bytes in logged fields as `\xHH`.
fn escape(s: &str) -> String {
    if !s
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

fn civil(now: SystemTime) -> (i64, u32, u32, u64) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs % 86_400)
}

/// `23/Nov/2026:09:23:53 +0000`, as nginx's `$time_local` (we log in UTC).
pub fn time_local(now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, s) = civil(now);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[m as usize - 1],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn time_iso8601(now: SystemTime) -> String {
    let (y, m, d, s) = civil(now);
    format!(
        "{y}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Where lines go. Cheap to clone; `write` never blocks.
#[derive(Clone, Default)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
}

/// Lines buffered before the writer is considered behind.
const QUEUE: usize = 65_536;

impl AccessLog {
    /// `None`: no access log. `Some("-")`: standard output. Otherwise a file, appended to.
    pub fn open(target: Option<PathBuf>) -> std::io::Result<AccessLog> {
        let Some(target) = target else {
            return Ok(AccessLog::default());
        };
        let out: Box<dyn Write + Send> = if target.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&target)?,
            )
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(AccessLog {
            tx: Some(tx),
            dropped: Arc::default(),
        })
    }

    pub fn write(&self, line: String) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_)) = tx.try_send(line)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }
}

fn writer(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Drain what is queued, then flush once.
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_local_matches_nginx() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_425_833);
        assert_eq!(time_local(t), "23/Nov/2026:09:23:53 +0000");
        assert_eq!(time_iso8601(UNIX_EPOCH), "1970-01-01T00:00:00+00:00");
    }

    #[test]
    fn combined_lines_escape_quotes() {
        let r = LogRecord {
            client: "192.0.2.1".parse().unwrap(),
            method: "GET".into(),
            target: "/a?b=1".into(),
            version: Version::HTTP_11,
            status: 200,
            referer: "-".into(),
            user_agent: "say \"hi\"".into(),
            host: "x".into(),
            application: "a".into(),
            request_id: "r".into(),
            upstream: UpstreamInfo::default(),
            started: Instant::now(),
        };
        let line = format_line(AccessLogFormat::Combined, &r, 12, true);
        assert!(line.starts_with("192.0.2.1 - - ["), "{line}");
        assert!(
            line.ends_with("] \"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \"say \\x22hi\\x22\"\n"),
            "{line}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&format_line(AccessLogFormat::Json, &r, 12, true)).unwrap();
        assert_eq!(json["status"], 200);
        assert_eq!(json["user_agent"], serde_json::Value::Null);
        assert_eq!(json["http_user_agent"], "say \"hi\"");
    }
}
