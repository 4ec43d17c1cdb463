//! What changed between two configs: objects added, removed or modified, by kind and name, with
//! the field paths that differ. A pure function; the API shows it as pending changes.
//!
//! Objects are compared in the proto3 JSON mapping (defaults omitted), so a field set to its
//! default and a field left out compare equal, as they do on the wire. Field paths use the proto
//! (snake_case) names, as the validator's errors do: `peers[0].address`.

use std::collections::BTreeMap;
use std::fmt;

use outpost_proto::pb::Config;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Added,
    Removed,
    Modified,
}

/// One object that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The collection, as in the API's paths (`applications`, `upstreams`, ...), or `server`.
    pub kind: &'static str,
    pub name: String,
    pub op: Op,
    /// For `modified`: the fields that differ, relative to the object.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.op {
            Op::Added => '+',
            Op::Removed => '-',
            Op::Modified => '~',
        };
        write!(f, "{sign} {}/{}", self.kind, self.name)?;
        if !self.fields.is_empty() {
            write!(f, ": {}", self.fields.join(", "))?;
        }
        Ok(())
    }
}

/// The changes that turn `old` into `new`, by kind in schema order, then by name. The configs'
/// own `version` fields are ignored.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    named(
        &mut out,
        "applications",
        &old.applications,
        &new.applications,
        |a| &a.name,
    );
    named(&mut out, "upstreams", &old.upstreams, &new.upstreams, |u| {
        &u.name
    });
    named(
        &mut out,
        "certificates",
        &old.certificates,
        &new.certificates,
        |c| &c.name,
    );
    named(
        &mut out,
        "lua_modules",
        &old.lua_modules,
        &new.lua_modules,
        |m| &m.name,
    );
    named(
        &mut out,
        "shared_dicts",
        &old.shared_dicts,
        &new.shared_dicts,
        |d| &d.name,
    );
    single(
        &mut out,
        "lua_init_worker",
        &old.lua_init_worker,
        &new.lua_init_worker,
        false,
    );
    single(&mut out, "server", &old.server, &new.server, true);
    single(&mut out, "gslb", &old.gslb, &new.gslb, true);
    single(
        &mut out,
        "lua_runtime",
        &old.lua_runtime,
        &new.lua_runtime,
        true,
    );
    out
}

/// A section that is one object (`server`, `gslb`): added, removed, or modified (with the
/// fields that changed when `fields` is set).
fn single<T: Serialize>(
    out: &mut Vec<Change>,
    kind: &'static str,
    old: &Option<T>,
    new: &Option<T>,
    fields: bool,
) {
    let (a, b) = (to_json(old), to_json(new));
    if a == b {
        return;
    }
    let op = match (old, new) {
        (None, Some(_)) => Op::Added,
        (Some(_), None) => Op::Removed,
        _ => Op::Modified,
    };
    let mut changed = Vec::new();
    if fields && op == Op::Modified {
        walk("", &a, &b, &mut changed);
    }
    out.push(Change {
        kind,
        name: kind.into(),
        op,
        fields: changed,
    });
}

/// The changes as text, one line each: `+ kind/name`, `- kind/name`, `~ kind/name: fields`.
pub fn to_text(changes: &[Change]) -> String {
    let mut s = String::new();
    for c in changes {
        s.push_str(&c.to_string());
        s.push('\n');
    }
    s
}

fn named<T: Serialize>(
    out: &mut Vec<Change>,
    kind: &'static str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
) {
    let old: BTreeMap<&String, &T> = old.iter().map(|o| (name(o), o)).collect();
    let new: BTreeMap<&String, &T> = new.iter().map(|o| (name(o), o)).collect();
    let mut names: Vec<&String> = old.keys().chain(new.keys()).copied().collect();
    names.sort();
    names.dedup();
    for n in names {
        let change = |op, fields| Change {
            kind,
            name: n.clone(),
            op,
            fields,
        };
        match (old.get(n), new.get(n)) {
            (None, Some(_)) => out.push(change(Op::Added, Vec::new())),
            (Some(_), None) => out.push(change(Op::Removed, Vec::new())),
            (Some(a), Some(b)) => {
                let mut fields = Vec::new();
                walk("", &to_json(a), &to_json(b), &mut fields);
                if !fields.is_empty() {
                    out.push(change(Op::Modified, fields));
                }
            }
            (None, None) => {}
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Collects the paths under which `a` and `b` differ. Lists of the same length are compared
/// item by item; a list that grew or shrank is reported as a whole.
fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    snake_case(k)
                } else {
                    format!("{path}.{}", snake_case(k))
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => walk(&sub, p, q, out),
                    _ => out.push(sub),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a == b => {}
        _ => out.push(if path.is_empty() {
            "(whole object)".into()
        } else {
            path.to_string()
        }),
    }
}

/// `connectTimeoutMs` to `connect_timeout_ms`: the JSON mapping's names back to the proto's.
fn snake_case(json_name: &str) -> String {
    let mut s = String::with_capacity(json_name.len() + 4);
    for c in json_name.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests;
