//! Purge requests, as the admin endpoint and the control plane's stream carry them.

use outpost_cache::PurgeSelector;
use outpost_proto::controlplane::v1::Purge;
use outpost_proto::controlplane::v1::purge::Selector;

/// The cache's selector for a purge, and whether it is soft; `None` for a purge with no
/// selector (nothing to do).
pub fn selector(p: &Purge) -> Option<(PurgeSelector, bool)> {
    let s = match p.selector.as_ref()? {
        Selector::Url(u) => PurgeSelector::Url(u.clone()),
        Selector::Prefix(x) => PurgeSelector::Prefix(x.clone()),
        Selector::Tag(t) => PurgeSelector::Tag(t.clone()),
        Selector::All(true) => PurgeSelector::All,
        Selector::All(false) => return None,
    };
    Some((s, p.soft))
}

/// `{"url"|"prefix"|"tag": "...", "soft": bool}` or `{"all": true}`: exactly one selector.
pub fn parse_request(body: &[u8]) -> Result<(PurgeSelector, bool), String> {
    let p = outpost_proto::purge::parse_request(body)?;
    selector(&p).ok_or_else(|| "give one of url, prefix, tag or all".into())
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
            parse_request(br#"{"all":true}"#),
            Ok((PurgeSelector::All, false))
        );
        assert!(parse_request(br#"{"url":"a","tag":"t"}"#).is_err());
    }
}
