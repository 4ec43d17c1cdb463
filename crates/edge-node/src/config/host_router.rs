//! Host to application: exact name, then the longest wildcard, then the listener's default.

use std::sync::Arc;

use super::{Application, FastMap};

#[derive(Default)]
pub struct HostRouter {
    exact: FastMap<String, Arc<Application>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: FastMap<String, Arc<Application>>,
    default: Option<Arc<Application>>,
}

impl HostRouter {
    pub fn insert(&mut self, app: &Arc<Application>) {
        for d in &app.domains {
            match d.strip_prefix("*.") {
                Some(suffix) => self.wildcard.insert(suffix.to_string(), app.clone()),
                None => self.exact.insert(d.clone(), app.clone()),
            };
        }
        if app.is_default {
            self.default = Some(app.clone());
        }
    }

    /// `host` is lowercase and without a port. A wildcard matches one or more leading labels
    /// (as nginx's `*.example.com`), the longest suffix winning.
    pub fn route(&self, host: &str) -> Option<&Arc<Application>> {
        if let Some(app) = self.exact.get(host) {
            return Some(app);
        }
        let mut rest = host;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(app) = self.wildcard.get(suffix) {
                return Some(app);
            }
            rest = suffix;
        }
        self.default.as_ref()
    }
}

/// The host of a request, lowercase, without port or trailing dot; borrowed from `raw` when
/// that is already lowercase (the common case: no allocation per request).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    // Byte searches: the str pattern API costs more than these few bytes do.
    let b = raw.as_bytes();
    let end = if b.first() == Some(&b'[') {
        b.iter().position(|&c| c == b']').map_or(b.len(), |i| i + 1)
    } else {
        match b.iter().rposition(|&c| c == b':') {
            Some(i) if b[i + 1..].iter().all(u8::is_ascii_digit) => i,
            _ => b.len(),
        }
    };
    let end = b[..end]
        .iter()
        .rposition(|&c| c != b'.')
        .map_or(0, |i| i + 1);
    // Both ends fall on ASCII bytes, so on character boundaries.
    let host = &raw[..end];
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, domains: &[&str], is_default: bool) -> Arc<Application> {
        Arc::new(Application::for_test(name, domains, is_default))
    }

    #[test]
    fn exact_beats_wildcard_beats_default() {
        let mut r = HostRouter::default();
        r.insert(&app("wild", &["*.example.com"], false));
        r.insert(&app("exact", &["www.example.com"], false));
        r.insert(&app("deeper", &["*.api.example.com"], false));
        r.insert(&app("fallback", &[], true));
        assert_eq!(r.route("www.example.com").unwrap().name, "exact");
        assert_eq!(r.route("img.example.com").unwrap().name, "wild");
        assert_eq!(r.route("a.b.example.com").unwrap().name, "wild");
        assert_eq!(r.route("v1.api.example.com").unwrap().name, "deeper");
        assert_eq!(r.route("example.com").unwrap().name, "fallback");
        assert_eq!(r.route("other.org").unwrap().name, "fallback");
    }

    #[test]
    fn no_default_means_no_route() {
        let mut r = HostRouter::default();
        r.insert(&app("a", &["a.com"], false));
        assert!(r.route("b.com").is_none());
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("WWW.Example.com:8080"), "www.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:443"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_host("Host:"), "host");
        assert_eq!(normalize_host("a.b..:80"), "a.b");
        assert_eq!(normalize_host("a:b"), "a:b");
        assert_eq!(normalize_host("[::1"), "[::1");
        assert_eq!(normalize_host("..."), "");
    }
}
