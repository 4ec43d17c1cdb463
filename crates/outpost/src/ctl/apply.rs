//! `outpost ctl apply -f FILE`: makes the working config equal to a YAML or JSON file.
//!
//! The file goes to the API's whole-config `PUT /api/v1/config` as JSON; the control plane
//! checks it against the schema and validates the whole result, so its answer (a 400, or a 422
//! with field paths) is the one shown. The client only turns YAML into JSON: it does not insist
//! on its own copy of the schema, so a newer control plane may take fields this client does not
//! know. Where the client can read both sides it also works out what the apply changes, to skip
//! a write that would change nothing and to say what changed.

use std::io::Read;

use anyhow::Context;
use outpost_control_plane::diff::{self, Change};
use outpost_proto::pb::Config;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{ApiError, Client};
use super::output;

/// Applies the file at `path` (`-` for standard input) and says what changed and what is now
/// pending; with `json_out`, the same as JSON: `{"applied": [changes] | null, "pending": ...}`.
pub async fn run(c: &Client, path: &str, json_out: bool) -> anyhow::Result<String> {
    let source = read(path)?;
    let wanted = to_json(&source)?;
    let name = &source.name;
    let before = c.get("/api/v1/config").await?;
    let unchanged = changes_between(&before, &wanted).is_some_and(|c| c.is_empty());
    let applied = if unchanged {
        Some(Vec::new())
    } else {
        let after = c
            .put("/api/v1/config", body(&source, &wanted))
            .await
            .map_err(|e| explain_position(e, &source))
            .with_context(|| format!("applying {name} to {}", c.base()))?;
        changes_between(&before, &after)
    };
    let pending = c.get("/api/v1/changes").await?;
    if json_out {
        let report = json!({ "applied": applied, "pending": pending });
        return Ok(format!("{}\n", serde_json::to_string_pretty(&report)?));
    }
    let mut out = match &applied {
        Some(changes) if changes.is_empty() => {
            format!("{name}: unchanged (the working config already matches it)\n")
        }
        Some(changes) => {
            let n = changes.len();
            let mut s = format!(
                "{name} applied: {n} {} to the working config\n",
                output::plural(n, "change", "changes")
            );
            for change in changes {
                s.push_str(&format!("  {change}\n"));
            }
            s
        }
        None => format!("{name} applied to the working config\n"),
    };
    out.push_str(&output::changes(&pending)?);
    if output::change_count(&pending)? > 0 {
        out.push_str("release them with: outpost ctl release -m NOTE\n");
    }
    Ok(out)
}

/// The request body: a JSON file as it is, so that a line and column in the API's answer point
/// into the file; YAML as the JSON made from it.
pub fn body(source: &Source, value: &Value) -> String {
    match format_of(&source.name, &source.text) {
        Format::Json => source.text.clone(),
        Format::Yaml => value.to_string(),
    }
}

/// A 400 names a line and column of the JSON it got; for a YAML file that is JSON the user
/// never saw, so the message says so.
fn explain_position(mut e: anyhow::Error, source: &Source) -> anyhow::Error {
    if format_of(&source.name, &source.text) == Format::Yaml
        && let Some(api) = e.downcast_mut::<ApiError>()
        && api.status == reqwest::StatusCode::BAD_REQUEST
        && api.message.contains(" at line ")
    {
        api.message.push_str(&format!(
            " (that position is in the JSON made from {}'s YAML)",
            source.name
        ));
    }
    e
}

/// A config file as read: its name for messages, and its text.
pub struct Source {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// Reads `path`, or standard input for `-`.
pub fn read(path: &str) -> anyhow::Result<Source> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the config from standard input")?;
        return Ok(Source {
            name: "stdin".into(),
            text,
        });
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(Source {
        name: path.to_string(),
        text,
    })
}

/// By extension (`.json`, `.yaml`, `.yml`); otherwise (standard input, other names) JSON when
/// the text opens with `{`, YAML when not.
pub fn format_of(name: &str, text: &str) -> Format {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".json") {
        Format::Json
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        Format::Yaml
    } else if text.trim_start().starts_with('{') {
        Format::Json
    } else {
        Format::Yaml
    }
}

/// The file as the JSON body of `PUT /api/v1/config`. Syntax errors name the file and, as the
/// parsers give them, the line and column. An empty file is refused: applying it would delete
/// every object, which is more likely a mistake (an empty pipe) than the intent; `{}` says it
/// on purpose.
pub fn to_json(source: &Source) -> anyhow::Result<Value> {
    let name = &source.name;
    anyhow::ensure!(
        !source.text.trim().is_empty(),
        "{name} is empty: refusing to clear the whole working config (apply `{{}}` to do that on purpose)"
    );
    let value: Value = match format_of(name, &source.text) {
        Format::Json => serde_json::from_str(&source.text)
            .map_err(|e| anyhow::anyhow!("{name} is not valid JSON: {e}"))?,
        Format::Yaml => serde_yaml_ng::from_str(&source.text)
            .map_err(|e| anyhow::anyhow!("{name} is not valid YAML: {e}"))?,
    };
    if !value.is_object() {
        anyhow::bail!(
            "{name}: the top level must be a mapping of the config's fields (applications, \
             upstreams, certificates, lua_modules, shared_dicts, server), not {}",
            kind_of(&value)
        );
    }
    Ok(value)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// What turns the config `old` into `new`, object by object, when this client can read both
/// (`None` when one has fields it does not know: a newer control plane, or a mistake in the
/// file that the API will name).
pub fn changes_between(old: &Value, new: &Value) -> Option<Vec<Change>> {
    let old = Config::deserialize(old).ok()?;
    let new = Config::deserialize(new).ok()?;
    Some(diff::diff(&old, &new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(name: &str, text: &str) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn the_format_comes_from_the_extension_then_from_the_text() {
        assert_eq!(format_of("a.json", "x: 1"), Format::Json);
        assert_eq!(format_of("A.YML", "{}"), Format::Yaml);
        assert_eq!(format_of("a.yaml", "{}"), Format::Yaml);
        assert_eq!(format_of("stdin", "  {\"upstreams\": []}"), Format::Json);
        assert_eq!(format_of("stdin", "upstreams: []"), Format::Yaml);
        assert_eq!(format_of("config", "# comment\n{}"), Format::Yaml);
    }

    #[test]
    fn yaml_becomes_the_same_json_the_api_takes() {
        let yaml = "upstreams:\n  - name: api\n    connect_timeout_ms: 100\n    peers: [{address: '127.0.0.1:80'}]\n";
        assert_eq!(
            to_json(&source("c.yaml", yaml)).unwrap(),
            json!({"upstreams": [{"name": "api", "connect_timeout_ms": 100, "peers": [{"address": "127.0.0.1:80"}]}]})
        );
        assert_eq!(
            to_json(&source("c.json", r#"{"sharedDicts": []}"#)).unwrap(),
            json!({"sharedDicts": []})
        );
    }

    #[test]
    fn json_goes_as_written_and_yaml_as_the_json_made_from_it() {
        let json_file = source("c.json", "{\n  \"upstreams\": []\n}\n");
        assert_eq!(
            body(&json_file, &to_json(&json_file).unwrap()),
            json_file.text
        );
        let yaml_file = source("c.yaml", "upstreams: []\n");
        assert_eq!(
            body(&yaml_file, &to_json(&yaml_file).unwrap()),
            r#"{"upstreams":[]}"#
        );
    }

    #[test]
    fn syntax_errors_name_the_file_and_the_line() {
        let e = to_json(&source("bad.yaml", "upstreams:\n  - name: [\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.yaml is not valid YAML"), "{e}");
        assert!(e.contains("line"), "{e}");
        let e = to_json(&source("bad.json", "{\"a\": }"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.json is not valid JSON") && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_file_is_refused_but_an_explicit_empty_mapping_is_not() {
        let e = to_json(&source("stdin", " \n")).unwrap_err().to_string();
        assert!(e.contains("refusing to clear"), "{e}");
        assert_eq!(to_json(&source("stdin", "{}")).unwrap(), json!({}));
    }

    #[test]
    fn the_top_level_must_be_a_mapping() {
        let e = to_json(&source("list.yaml", "- a\n- b\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("must be a mapping") && e.contains("a list"),
            "{e}"
        );
    }

    #[test]
    fn changes_are_worked_out_when_both_sides_can_be_read() {
        let old = json!({"upstreams": [{"name": "api", "peers": [{"address": "127.0.0.1:80"}]}]});
        let new = json!({"upstreams": [{"name": "api", "peers": [{"address": "127.0.0.1:81"}]}],
                         "shared_dicts": [{"name": "limits", "capacity_bytes": 1024}]});
        let lines: Vec<String> = changes_between(&old, &new)
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            lines,
            ["~ upstreams/api: peers[0].address", "+ shared_dicts/limits"]
        );
        assert_eq!(changes_between(&new, &new).unwrap(), Vec::new());
        // A field this client does not know: no local answer, the API decides.
        assert!(changes_between(&old, &json!({"upstreamz": []})).is_none());
    }
}
