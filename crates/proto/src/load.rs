//! Reading a [`Config`](crate::pb::Config) from YAML or JSON text.
//!
//! Both go through the proto3 JSON mapping (pbjson), so a YAML file, a JSON file and an admin
//! API request body accept exactly the same field names (snake_case or lowerCamelCase) and
//! reject unknown fields the same way.

use crate::pb::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Yaml,
    Json,
}

impl SourceFormat {
    /// Guesses the format from a file name: `.json` is JSON, anything else YAML (a superset).
    pub fn from_path(path: &std::path::Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => SourceFormat::Json,
            _ => SourceFormat::Yaml,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid config: {0}")]
    Schema(serde_json::Error),
}

/// Parses config text. The result is not validated: call [`crate::validate`] next.
pub fn parse_config(text: &str, format: SourceFormat) -> Result<Config, LoadError> {
    parse_any(text, format)
}

/// Parses a GSLB config (`outpost gslb --config FILE`). The result is not validated: call
/// [`crate::validate_gslb::validate_gslb`] next.
pub fn parse_gslb_config(
    text: &str,
    format: SourceFormat,
) -> Result<crate::gslb::v1::GslbConfig, LoadError> {
    parse_any(text, format)
}

fn parse_any<T: serde::de::DeserializeOwned>(
    text: &str,
    format: SourceFormat,
) -> Result<T, LoadError> {
    let value: serde_json::Value = match format {
        SourceFormat::Json => serde_json::from_str(text)?,
        SourceFormat::Yaml => {
            if text.trim().is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_yaml_ng::from_str(text)?
            }
        }
    };
    serde_json::from_value(value).map_err(LoadError::Schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_accept_the_same_fields_in_both_spellings() {
        let yaml = "version: 7\nupstreams:\n  - name: web\n    connect_timeout_ms: 100\n    peers: [{address: '127.0.0.1:80', weight: 2}]\n";
        let json = r#"{"version":"7","upstreams":[{"name":"web","connectTimeoutMs":100,"peers":[{"address":"127.0.0.1:80","weight":2}]}]}"#;
        let a = parse_config(yaml, SourceFormat::Yaml).unwrap();
        let b = parse_config(json, SourceFormat::Json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.version, 7);
        assert_eq!(a.upstreams[0].connect_timeout_ms, 100);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = parse_config(
            "upstreams:\n  - name: web\n    pears: []\n",
            SourceFormat::Yaml,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pears"), "{err}");
    }

    #[test]
    fn enums_take_their_proto_names() {
        let c = parse_config(
            "upstreams:\n  - name: web\n    balancer: BALANCER_LEAST_CONN\n",
            SourceFormat::Yaml,
        )
        .unwrap();
        assert_eq!(c.upstreams[0].balancer(), crate::pb::Balancer::LeastConn);
    }

    #[test]
    fn an_empty_file_is_an_empty_config() {
        assert_eq!(
            parse_config("", SourceFormat::Yaml).unwrap(),
            Config::default()
        );
    }
}
