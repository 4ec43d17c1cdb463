//! The one error type of the request path: where it came from, whether the next peer may be
//! tried, and the status a client sees.

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("TLS handshake with upstream failed: {0}")]
    Tls(String),
    #[error("upstream handshake failed: {0}")]
    Protocol(String),
    #[error("upstream timed out before the response head")]
    ReadTimeout,
    #[error("upstream failed: {0}")]
    Upstream(hyper::Error),
    /// The edge's own client sent the request and the response failed (`h1_client.rs`).
    #[error("upstream response failed: {0}")]
    Response(String),
    #[error("no live upstream peers")]
    NoLivePeers,
    #[error("request body larger than the limit")]
    BodyTooLarge,
    /// The upstream's `lua_balancer` failed (a Lua error, or `ngx.exit(ngx.ERROR)`): 500, as
    /// nginx answers when `balancer_by_lua` fails.
    #[error("balancer_by_lua failed: {0}")]
    Balancer(String),
}

impl ProxyError {
    /// The status sent to the client when no peer could answer.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::ConnectTimeout | ProxyError::ReadTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Balancer(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Label for `upstream_errors`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Connect(_) => "connect",
            ProxyError::ConnectTimeout => "connect_timeout",
            ProxyError::Tls(_) => "tls",
            ProxyError::Protocol(_) => "protocol",
            ProxyError::ReadTimeout => "read_timeout",
            ProxyError::Upstream(_) | ProxyError::Response(_) => "upstream",
            ProxyError::NoLivePeers => "no_live_peers",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::Balancer(_) => "balancer",
        }
    }

    /// A timeout, for `next_upstream` (the others are errors).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProxyError::ConnectTimeout | ProxyError::ReadTimeout)
    }

    /// Whether the peer never saw the request (so any request may go to the next peer).
    pub fn before_request_sent(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect(_)
                | ProxyError::ConnectTimeout
                | ProxyError::Tls(_)
                | ProxyError::Protocol(_)
        )
    }

    /// Whether this counts against the peer's passive health.
    pub fn blames_peer(&self) -> bool {
        !matches!(
            self,
            ProxyError::BodyTooLarge | ProxyError::NoLivePeers | ProxyError::Balancer(_)
        )
    }
}
