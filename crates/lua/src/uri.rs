//! nginx's `$uri`: the request path percent-decoded and normalised (merged slashes, `.` and
//! `..` resolved), as `ngx_http_parse_complex_uri` makes it; and the way back, the escaping
//! nginx's proxy applies to a rewritten `$uri` before sending it upstream.

/// Whether `raw` is already its own normal form, as most paths are: nothing to decode, no
/// empty, `.` or `..` segment.
pub fn is_normal(raw: &str) -> bool {
    // One pass over the bytes: three substring searches cost more than this for every path.
    let b = raw.as_bytes();
    b.first() == Some(&b'/')
        && !b.contains(&b'%')
        && !b
            .windows(2)
            .any(|w| w[0] == b'/' && matches!(w[1], b'/' | b'.'))
}

/// The normalised, decoded form of `raw` (a path as the client sent it), or `None` where
/// nginx would refuse the request (a bad `%` escape, `%00`, `..` above the root) or the
/// result is not UTF-8; callers then keep the raw path.
pub fn normalise(raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        return None;
    }
    if is_normal(raw) {
        return Some(raw.to_string());
    }
    resolve(raw)
}

fn resolve(raw: &str) -> Option<String> {
    let decoded = decode(raw.as_bytes())?;
    let decoded = String::from_utf8(decoded).ok()?;
    let mut segments: Vec<&str> = Vec::new();
    // A path that ends in `/`, `/.` or `/..` names a directory: it keeps a trailing slash.
    let mut trailing = false;
    for seg in decoded.split('/').skip(1) {
        trailing = true;
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// `%XX` decoded (`+` stays); `None` for an invalid escape or a NUL byte, as nginx refuses.
fn decode(b: &[u8]) -> Option<Vec<u8>> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let c = hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?;
            if c == 0 {
                return None;
            }
            out.push(c);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A (decoded) path escaped as nginx's `ngx_escape_uri(NGX_ESCAPE_URI)` does for a rewritten
/// `$uri` going upstream: space, `#`, `%`, `?` and non-printable bytes.
pub fn escape(path: &str) -> String {
    crate::api::codec::escape_path(path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_resolves_like_nginx() {
        let n = |s| normalise(s);
        assert_eq!(n("/t/a%20b/%41").as_deref(), Some("/t/a b/A"));
        assert_eq!(n("/a//b///c").as_deref(), Some("/a/b/c"));
        assert_eq!(n("/a/./b/../c").as_deref(), Some("/a/c"));
        assert_eq!(n("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(n("/a/.").as_deref(), Some("/a/"));
        assert_eq!(n("/a/").as_deref(), Some("/a/"));
        assert_eq!(n("/").as_deref(), Some("/"));
        assert_eq!(
            n("/a%2F..%2Fb").as_deref(),
            Some("/b"),
            "an escaped slash is a slash"
        );
        assert_eq!(n("/a+b%25").as_deref(), Some("/a+b%"));
    }

    #[test]
    fn a_path_taken_as_normal_is_what_resolving_it_gives() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a.b/c..d/",
            "/a+b/c-d_e~f",
            "/x/y/z.html",
            "/a./b",
        ] {
            assert!(is_normal(p), "{p}");
            assert_eq!(resolve(p).as_deref(), Some(p));
        }
        for p in ["/a%20", "/a//b", "/a/./b", "/a/..", "/.x", "a"] {
            assert!(!is_normal(p), "{p}");
        }
    }

    #[test]
    fn refuses_what_nginx_refuses() {
        for bad in ["/..", "/a/../..", "/%zz", "/%4", "/a%00", "*", "/%FF"] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
    }

    #[test]
    fn escapes_for_upstream() {
        assert_eq!(escape("/a b/c#d?e%"), "/a%20b/c%23d%3Fe%25");
        assert_eq!(escape("/é"), "/%C3%A9");
    }
}
