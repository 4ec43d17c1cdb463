//! What rules, templates and balancers can see of a request: a borrowed view, built once per
//! request, with the nginx variable names (`$host`, `$uri`, `$arg_x`, `$http_x`, `$cookie_x`).

use std::borrow::Cow;
use std::net::SocketAddr;

use http::{HeaderMap, Method, Version};

#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub version: Version,
    pub scheme: &'static str,
    /// Lowercase, without port.
    pub host: &'a str,
    /// The path, after any rewrite so far.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub request_id: &'a super::RequestId,
    /// Values of the application's declared variables, by name.
    pub declared: &'a [(String, String)],
}

impl RequestView<'_> {
    /// The first value of a query argument, raw (not percent-decoded), as nginx's `$arg_NAME`.
    pub fn arg(&self, name: &str) -> Option<&str> {
        query_arg(self.query?, name)
    }

    /// All values of a header joined with ", " (one value is borrowed as is).
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        let first = String::from_utf8_lossy(first.as_bytes());
        match values.next() {
            None => Some(first),
            Some(second) => {
                let mut joined = first.into_owned();
                for v in std::iter::once(second).chain(values) {
                    joined.push_str(", ");
                    joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    /// A cookie's value from the `Cookie` header(s), as nginx's `$cookie_NAME`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v)
            })
    }

    pub fn declared(&self, name: &str) -> Option<&str> {
        self.declared
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn query_arg<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Owns what a [`RequestView`] borrows, for tests.
    pub struct OwnedRequest {
        pub method: Method,
        pub host: String,
        pub path: String,
        pub query: Option<String>,
        pub headers: HeaderMap,
        pub client: SocketAddr,
        pub declared: Vec<(String, String)>,
        pub request_id: crate::rules::RequestId,
    }

    impl OwnedRequest {
        pub fn get(uri: &str) -> Self {
            let (path, query) = match uri.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (uri.to_string(), None),
            };
            OwnedRequest {
                method: Method::GET,
                host: "example.com".into(),
                path,
                query,
                headers: HeaderMap::new(),
                client: "192.0.2.7:5555".parse().unwrap(),
                declared: vec![],
                request_id: crate::rules::RequestId::fixed(http::HeaderValue::from_static("rid")),
            }
        }

        pub fn header(mut self, k: &'static str, v: &str) -> Self {
            self.headers.append(k, v.parse().unwrap());
            self
        }

        pub fn view(&self) -> RequestView<'_> {
            RequestView {
                method: &self.method,
                version: Version::HTTP_11,
                scheme: "http",
                host: &self.host,
                path: &self.path,
                query: self.query.as_deref(),
                headers: &self.headers,
                client: self.client,
                local: "127.0.0.1:80".parse().unwrap(),
                request_id: &self.request_id,
                declared: &self.declared,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::OwnedRequest;

    #[test]
    fn args_cookies_and_headers_resolve_as_in_nginx() {
        let r = OwnedRequest::get("/p?a=1&B=2&flag&a=3")
            .header("cookie", "sid=abc; theme=dark")
            .header("x-multi", "one")
            .header("x-multi", "two");
        let v = r.view();
        assert_eq!(v.arg("a"), Some("1"));
        assert_eq!(v.arg("b"), Some("2"));
        assert_eq!(v.arg("flag"), Some(""));
        assert_eq!(v.arg("zzz"), None);
        assert_eq!(v.cookie("theme"), Some("dark"));
        assert_eq!(v.cookie("nope"), None);
        assert_eq!(v.header("x-multi").as_deref(), Some("one, two"));
    }
}
