//! Purge requests, as the admin endpoint and (later) the control plane's stream carry them.

use outpost_cache::PurgeSelector;

/// `{"url"|"prefix"|"tag": "...", "soft": bool}` or `{"all": true}`: exactly one selector.
pub fn parse_request(body: &[u8]) -> Result<(PurgeSelector, bool), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("body must be a JSON object")?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "url" | "prefix" | "tag" | "all" | "soft") {
            return Err(format!("{k}: unknown field"));
        }
    }
    let soft = match obj.get("soft") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err("soft: must be true or false".into()),
    };
    let text = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("{k}: must be a non-empty string")),
        }
    };
    let mut selectors = Vec::new();
    if let Some(u) = text("url")? {
        selectors.push(PurgeSelector::Url(u));
    }
    if let Some(p) = text("prefix")? {
        selectors.push(PurgeSelector::Prefix(p));
    }
    if let Some(t) = text("tag")? {
        selectors.push(PurgeSelector::Tag(t));
    }
    match obj.get("all") {
        None | Some(serde_json::Value::Bool(false)) => {}
        Some(serde_json::Value::Bool(true)) => selectors.push(PurgeSelector::All),
        Some(_) => return Err("all: must be true or false".into()),
    }
    match selectors.len() {
        1 => Ok((selectors.remove(0), soft)),
        0 => Err("give one of url, prefix, tag or all".into()),
        _ => Err("give only one of url, prefix, tag or all".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_selector_exactly() {
        assert_eq!(
            parse_request(br#"{"url":"http://a/b","soft":true}"#),
            Ok((PurgeSelector::Url("http://a/b".into()), true))
        );
        assert_eq!(
            parse_request(br#"{"tag":"t"}"#),
            Ok((PurgeSelector::Tag("t".into()), false))
        );
        assert!(parse_request(br#"{"url":"a","tag":"t"}"#).is_err());
        assert!(parse_request(br#"{}"#).is_err());
        assert!(
            parse_request(br#"{"urll":"a"}"#)
                .unwrap_err()
                .contains("urll")
        );
        assert!(parse_request(b"nope").is_err());
    }
}
