//! Purge requests in JSON, as an edge's `POST /cache/purge` and the control plane's
//! `POST /api/v1/purges` take them: `{"url"|"prefix"|"tag": "...", "soft": bool}` or
//! `{"all": true}`, exactly one selector.

use crate::controlplane::v1::Purge;
use crate::controlplane::v1::purge::Selector;

/// The request as a [`Purge`] (its `id` and time left for the caller), or why it is wrong,
/// naming the field.
pub fn parse_request(body: &[u8]) -> Result<Purge, String> {
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
        selectors.push(Selector::Url(u));
    }
    if let Some(p) = text("prefix")? {
        selectors.push(Selector::Prefix(p));
    }
    if let Some(t) = text("tag")? {
        selectors.push(Selector::Tag(t));
    }
    match obj.get("all") {
        None | Some(serde_json::Value::Bool(false)) => {}
        Some(serde_json::Value::Bool(true)) => selectors.push(Selector::All(true)),
        Some(_) => return Err("all: must be true or false".into()),
    }
    match selectors.len() {
        1 => Ok(Purge {
            selector: selectors.pop(),
            soft,
            ..Default::default()
        }),
        0 => Err("give one of url, prefix, tag or all".into()),
        _ => Err("give only one of url, prefix, tag or all".into()),
    }
}

/// The purge as the JSON its request had (for listings and logs).
pub fn to_json(p: &Purge) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    match &p.selector {
        Some(Selector::Url(u)) => o.insert("url".into(), u.clone().into()),
        Some(Selector::Prefix(x)) => o.insert("prefix".into(), x.clone().into()),
        Some(Selector::Tag(t)) => o.insert("tag".into(), t.clone().into()),
        Some(Selector::All(a)) => o.insert("all".into(), (*a).into()),
        None => None,
    };
    if p.soft {
        o.insert("soft".into(), true.into());
    }
    serde_json::Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_selector_exactly() {
        let p = parse_request(br#"{"url":"http://a/b","soft":true}"#).unwrap();
        assert_eq!(p.selector, Some(Selector::Url("http://a/b".into())));
        assert!(p.soft);
        let p = parse_request(br#"{"tag":"t"}"#).unwrap();
        assert_eq!(p.selector, Some(Selector::Tag("t".into())));
        assert!(!p.soft);
        assert_eq!(to_json(&p), serde_json::json!({"tag": "t"}));
        assert!(parse_request(br#"{"url":"a","tag":"t"}"#).is_err());
        assert!(parse_request(br#"{}"#).is_err());
        assert!(parse_request(br#"{"all":false}"#).is_err());
        assert!(
            parse_request(br#"{"urll":"a"}"#)
                .unwrap_err()
                .contains("urll")
        );
        assert!(parse_request(b"nope").is_err());
    }
}
