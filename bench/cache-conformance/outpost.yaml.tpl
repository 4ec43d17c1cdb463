# One application caching by the RFC (default key), the suite's origin as its only upstream.
# Everything else is the edge's defaults. @CACHE_RULE@ is empty, or stale_if_error_seconds
# when run.sh gets OUTPOST_STALE_IF_ERROR.
version: 1
upstreams:
  - name: origin
    peers: [{address: "127.0.0.1:@ORIGIN_PORT@"}]
applications:
  - name: cachetests
    domains: ["127.0.0.1"]
    is_default: true
    listeners: [{address: "127.0.0.1:@PROXY_PORT@"}]
    upstream: origin
    cache_rules: [{@CACHE_RULE@}]
