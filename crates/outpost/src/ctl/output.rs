//! What `outpost ctl` prints: the API's JSON turned into tables and short text for people.
//!
//! Plain functions from the API's JSON (and, where time matters, `now`) to a `String`, so they
//! are tested without a server. Replies are read leniently: fields this client does not know are
//! ignored and missing ones take defaults, so a newer control plane still prints; a reply of the
//! wrong shape is an error that says what was expected, never a panic.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Reads `value` as `T`, naming `what` the reply was supposed to be when it does not fit.
fn decode<T: DeserializeOwned>(value: &Value, what: &str) -> anyhow::Result<T> {
    T::deserialize(value).map_err(|e| anyhow::anyhow!("unexpected reply for {what}: {e}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Changes {
    base_version: Option<u64>,
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    fields: Vec<String>,
}

/// `GET /api/v1/changes`: one line per object, as the API's own text form writes them
/// (`+ kind/name`, `- kind/name`, `~ kind/name: fields`), under a line saying against what.
pub fn changes(reply: &Value) -> anyhow::Result<String> {
    let c: Changes = decode(reply, "the pending changes")?;
    let since = match c.base_version {
        Some(v) => format!("since version {v}"),
        None => "(nothing released yet)".to_string(),
    };
    if c.changes.is_empty() {
        return Ok(format!("no pending changes {since}\n"));
    }
    let mut out = format!(
        "{} pending {} {since}:\n",
        c.changes.len(),
        plural(c.changes.len(), "change", "changes")
    );
    for change in &c.changes {
        out.push_str("  ");
        out.push_str(&change_line(change));
        out.push('\n');
    }
    Ok(out)
}

fn change_line(c: &Change) -> String {
    let sign = match c.op.as_str() {
        "added" => "+",
        "removed" => "-",
        "modified" => "~",
        _ => "?",
    };
    let mut line = format!("{sign} {}/{}", c.kind, c.name);
    if !c.fields.is_empty() {
        line.push_str(": ");
        line.push_str(&c.fields.join(", "));
    }
    line
}

/// The number of pending changes in a `GET /api/v1/changes` reply.
pub fn change_count(reply: &Value) -> anyhow::Result<usize> {
    let c: Changes = decode(reply, "the pending changes")?;
    Ok(c.changes.len())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Release {
    version: u64,
    #[serde(default)]
    note: String,
    #[serde(default)]
    created_at_ms: i64,
    #[serde(default)]
    sha256: String,
    rollback_of: Option<u64>,
    #[serde(default)]
    staged: bool,
    promoted_at_ms: Option<i64>,
}

#[derive(Deserialize)]
struct Releases {
    #[serde(default)]
    releases: Vec<Release>,
}

/// `POST /api/v1/releases` and `.../rollback`: the version made.
pub fn release_made(reply: &Value) -> anyhow::Result<String> {
    let r: Release = decode(reply, "the release")?;
    let mut out = match (r.staged, r.promoted_at_ms) {
        (true, None) => format!(
            "released version {} to nodes labelled staging (promote it to send it to all)",
            r.version
        ),
        (true, Some(_)) => format!("promoted version {} to every node", r.version),
        _ => format!("released version {}", r.version),
    };
    if let Some(of) = r.rollback_of {
        out.push_str(&format!(" (the config of version {of})"));
    }
    if !r.note.is_empty() {
        out.push_str(&format!(": {}", one_line(&r.note)));
    }
    if !r.sha256.is_empty() {
        out.push_str(&format!("\nsha256 {}", r.sha256));
    }
    out.push('\n');
    Ok(out)
}

/// `GET /api/v1/releases`: newest first, as the API lists them.
pub fn releases(reply: &Value) -> anyhow::Result<String> {
    let list: Releases = decode(reply, "the list of releases")?;
    if list.releases.is_empty() {
        return Ok("no releases yet\n".into());
    }
    let rows = list
        .releases
        .iter()
        .map(|r| {
            vec![
                r.version.to_string(),
                utc(r.created_at_ms),
                r.rollback_of.map_or("-".into(), |v| v.to_string()),
                r.sha256.chars().take(12).collect(),
                one_line(&r.note),
            ]
        })
        .collect();
    Ok(table(
        &["VERSION", "CREATED (UTC)", "ROLLBACK OF", "SHA256", "NOTE"],
        rows,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    #[serde(default)]
    id: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    last_heartbeat_ms: i64,
    applied_version: Option<u64>,
    rejected_version: Option<u64>,
    last_error: Option<String>,
    connected: Option<bool>,
    #[serde(default)]
    drained: bool,
}

#[derive(Deserialize)]
struct Nodes {
    #[serde(default)]
    nodes: Vec<Node>,
}

/// `GET /api/v1/nodes`: which version each node runs, and why the last one failed.
pub fn nodes(reply: &Value, now_ms: i64) -> anyhow::Result<String> {
    let list: Nodes = decode(reply, "the list of nodes")?;
    if list.nodes.is_empty() {
        return Ok("no nodes have connected yet\n".into());
    }
    let rows = list
        .nodes
        .iter()
        .map(|n| {
            let error = match (&n.last_error, n.rejected_version) {
                (Some(e), Some(v)) if !e.is_empty() => format!("version {v}: {}", one_line(e)),
                (Some(e), None) if !e.is_empty() => one_line(e),
                _ => "-".into(),
            };
            vec![
                n.id.clone(),
                if n.drained {
                    format!("{} (drained)", dash(&n.kind))
                } else {
                    dash(&n.kind)
                },
                dash(&n.region),
                n.applied_version.map_or("-".into(), |v| v.to_string()),
                match n.connected {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "-".into(),
                },
                ago(now_ms, n.last_heartbeat_ms),
                error,
            ]
        })
        .collect();
    Ok(table(
        &[
            "ID",
            "KIND",
            "REGION",
            "APPLIED",
            "CONNECTED",
            "LAST SEEN",
            "ERROR",
        ],
        rows,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterStatus {
    id: u64,
    #[serde(default)]
    state: String,
    leader: Option<u64>,
    #[serde(default)]
    term: u64,
    last_log_index: Option<u64>,
    last_applied_index: Option<u64>,
    snapshot_index: Option<u64>,
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Member {
    id: u64,
    #[serde(default)]
    api_addr: String,
    #[serde(default)]
    grpc_addr: String,
    #[serde(default)]
    voter: bool,
    matched_index: Option<u64>,
}

/// `GET /api/v1/cluster`: the answering node's view of the leader, the term, its log and the
/// members.
pub fn cluster(reply: &Value) -> anyhow::Result<String> {
    let s: ClusterStatus = decode(reply, "the cluster status")?;
    let index = |i: Option<u64>| i.map_or("-".into(), |i| i.to_string());
    let mut out = format!(
        "leader: {}, term {}\nanswered by node {} ({}): last log {}, applied {}, snapshot {}\n",
        s.leader.map_or("none".into(), |l| format!("node {l}")),
        s.term,
        s.id,
        dash(&s.state.to_lowercase()),
        index(s.last_log_index),
        index(s.last_applied_index),
        index(s.snapshot_index),
    );
    let rows = s
        .members
        .iter()
        .map(|m| {
            let role = if Some(m.id) == s.leader {
                "leader"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            vec![
                m.id.to_string(),
                role.into(),
                dash(&m.api_addr),
                dash(&m.grpc_addr),
                index(m.matched_index),
            ]
        })
        .collect();
    out.push_str(&table(&["ID", "ROLE", "API", "GRPC", "MATCHED"], rows));
    Ok(out)
}

/// `POST /api/v1/purges` (202): what was asked, and the API's reply in brief.
pub fn purge_accepted(request: &Value, reply: &Value) -> String {
    let what = ["url", "prefix", "tag"]
        .iter()
        .find_map(|k| {
            request
                .get(*k)
                .and_then(Value::as_str)
                .map(|v| format!("{k} {v}"))
        })
        .unwrap_or_else(|| "everything".into());
    let how = if request.get("soft") == Some(&Value::Bool(true)) {
        "soft purge (mark stale)"
    } else {
        "purge"
    };
    let id = reply
        .get("id")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    match id {
        Some(id) => format!("{how} {id} of {what} accepted: every node will apply it\n"),
        None => format!("{how} of {what} accepted: every node will apply it\n"),
    }
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded, so a
/// long note or error does not push the others.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0);
                line.extend(std::iter::repeat_n(
                    ' ',
                    pad.saturating_sub(cell.chars().count()),
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Unix milliseconds as `2025-05-01T12:00:00Z`; `-` for no time.
pub fn utc(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let secs = ms.div_euclid(1000);
    let (days, in_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How long before `now_ms` the time `ms` was, roughly: `12s ago`, `3m ago`, `5h ago`, `2d ago`.
pub fn ago(now_ms: i64, ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let secs = now_ms.saturating_sub(ms).max(0) / 1000;
    match secs {
        0 => "just now".into(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

pub fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_are_one_line_each_under_their_base_version() {
        let reply = json!({"baseVersion": 1, "changes": [
            {"kind": "upstreams", "name": "api", "op": "modified", "fields": ["peers[0].address", "connect_timeout_ms"]},
            {"kind": "applications", "name": "www", "op": "added"},
            {"kind": "shared_dicts", "name": "limits", "op": "removed"},
        ]});
        assert_eq!(
            changes(&reply).unwrap(),
            "3 pending changes since version 1:\n\
             \x20 ~ upstreams/api: peers[0].address, connect_timeout_ms\n\
             \x20 + applications/www\n\
             \x20 - shared_dicts/limits\n"
        );
        assert_eq!(change_count(&reply).unwrap(), 3);
    }

    #[test]
    fn no_changes_and_no_release_yet_are_said_plainly() {
        assert_eq!(
            changes(&json!({"baseVersion": 4, "changes": []})).unwrap(),
            "no pending changes since version 4\n"
        );
        assert_eq!(
            changes(&json!({"baseVersion": null, "changes": [{"kind":"upstreams","name":"a","op":"added"}]})).unwrap(),
            "1 pending change (nothing released yet):\n  + upstreams/a\n"
        );
    }

    #[test]
    fn a_reply_of_the_wrong_shape_is_an_error_not_a_panic() {
        let e = changes(&json!({"changes": "lots"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pending changes"), "{e}");
        assert!(releases(&json!([1, 2])).is_err());
        assert!(nodes(&json!({"nodes": [{"appliedVersion": "x"}]}), 0).is_err());
        assert!(cluster(&Value::Null).is_err());
        assert!(release_made(&json!({"note": "no version"})).is_err());
    }

    #[test]
    fn unknown_fields_from_a_newer_server_are_ignored() {
        let reply = json!({"releases": [{"version": 1, "note": "n", "createdAtMs": 0, "sha256": "", "stagedTo": ["x"]}], "next": 2});
        let text = releases(&reply).unwrap();
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("1 ") && row.ends_with("  n"), "{text}");
    }

    #[test]
    fn releases_are_a_table_with_times_in_utc() {
        let reply = json!({"releases": [
            {"version": 2, "note": "rollback to version 1", "createdAtMs": 1_746_100_800_000_i64, "sha256": "0123456789abcdef", "rollbackOf": 1},
            {"version": 1, "note": "first\nrelease", "createdAtMs": 1_746_100_700_000_i64, "sha256": "fedcba9876543210"},
        ]});
        assert_eq!(
            releases(&reply).unwrap(),
            "VERSION  CREATED (UTC)         ROLLBACK OF  SHA256        NOTE\n\
             2        2025-05-01T12:00:00Z  1            0123456789ab  rollback to version 1\n\
             1        2025-05-01T11:58:20Z  -            fedcba987654  first release\n"
        );
        assert_eq!(
            releases(&json!({"releases": []})).unwrap(),
            "no releases yet\n"
        );
    }

    #[test]
    fn a_release_made_says_its_version_and_what_it_copied() {
        let made = json!({"version": 3, "note": "roll back", "createdAtMs": 1, "sha256": "ab", "rollbackOf": 1});
        assert_eq!(
            release_made(&made).unwrap(),
            "released version 3 (the config of version 1): roll back\nsha256 ab\n"
        );
    }

    #[test]
    fn nodes_show_applied_version_last_seen_and_the_last_error() {
        let now = 1_746_100_800_000_i64;
        let reply = json!({"nodes": [
            {"id": "edge-1", "kind": "edge", "region": "eu-west", "labels": {}, "addresses": [],
             "lastHeartbeatMs": now - 12_000, "appliedVersion": 1, "rejectedVersion": 2,
             "lastError": "listen 0.0.0.0:80:\naddress in use", "connected": true,
             "drained": true},
            {"id": "dns-1", "kind": "gslb", "region": "", "lastHeartbeatMs": now - 7_200_000,
             "appliedVersion": null, "connected": false},
        ]});
        assert_eq!(
            nodes(&reply, now).unwrap(),
            "ID      KIND            REGION   APPLIED  CONNECTED  LAST SEEN  ERROR\n\
             edge-1  edge (drained)  eu-west  1        yes        12s ago    version 2: listen 0.0.0.0:80: address in use\n\
             dns-1   gslb            -        -        no         2h ago     -\n"
        );
        assert_eq!(
            nodes(&json!({"nodes": []}), now).unwrap(),
            "no nodes have connected yet\n"
        );
    }

    #[test]
    fn the_cluster_shows_leader_term_and_each_members_role() {
        let reply = json!({"id": 2, "state": "Follower", "leader": 1, "term": 7,
        "lastLogIndex": 40, "lastAppliedIndex": 39, "snapshotIndex": null, "purgedIndex": null,
        "voters": [1, 2], "members": [
            {"id": 1, "grpcAddr": "10.0.0.1:9401", "apiAddr": "10.0.0.1:9400", "voter": true},
            {"id": 2, "grpcAddr": "10.0.0.2:9401", "apiAddr": "10.0.0.2:9400", "voter": true},
            {"id": 3, "grpcAddr": "10.0.0.3:9401", "apiAddr": "10.0.0.3:9400", "voter": false, "matchedIndex": 12},
        ]});
        assert_eq!(
            cluster(&reply).unwrap(),
            "leader: node 1, term 7\n\
             answered by node 2 (follower): last log 40, applied 39, snapshot -\n\
             ID  ROLE     API            GRPC           MATCHED\n\
             1   leader   10.0.0.1:9400  10.0.0.1:9401  -\n\
             2   voter    10.0.0.2:9400  10.0.0.2:9401  -\n\
             3   learner  10.0.0.3:9400  10.0.0.3:9401  12\n"
        );
    }

    #[test]
    fn a_purge_says_what_and_how() {
        assert_eq!(
            purge_accepted(&json!({"tag": "p-42", "soft": true}), &json!({"id": 7})),
            "soft purge (mark stale) 7 of tag p-42 accepted: every node will apply it\n"
        );
        assert_eq!(
            purge_accepted(&json!({"all": true}), &Value::Null),
            "purge of everything accepted: every node will apply it\n"
        );
    }

    #[test]
    fn times_are_utc_dates_and_rough_ages() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_746_100_800_000), "2025-05-01T12:00:00Z");
        assert_eq!(utc(4_102_444_799_000), "2099-12-31T23:59:59Z");
        assert_eq!(ago(10_000, 0), "never");
        assert_eq!(ago(10_000, 9_500), "just now");
        assert_eq!(ago(10_000, 20_000), "just now");
        assert_eq!(ago(100_000, 40_000), "1m ago");
        assert_eq!(ago(3 * 86_400_000, 1), "2d ago");
    }

    #[test]
    fn table_columns_line_up_with_wide_characters_counted_once() {
        let t = table(
            &["A", "B", "C"],
            vec![
                vec!["é".into(), "x".into(), "last".into()],
                vec!["long".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(t, "A     B  C\né     x  last\nlong\n");
    }
}
