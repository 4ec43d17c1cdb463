#!/usr/bin/env bash
# Sourced by the single-machine bench scripts: `write_origin DIR PORT` writes DIR/1k.bin and
# DIR/origin.conf, an nginx origin serving DIR on 127.0.0.1:PORT with one worker, long
# keep-alive and `Cache-Control: max-age=3600`. Start it with
# `nginx -c DIR/origin.conf -g 'daemon off;'`.
write_origin() {
  local dir="$1" port="$2" user_line=""
  head -c 1024 /dev/zero | tr '\0' x > "$dir/1k.bin"
  [ "$(id -u)" = 0 ] && user_line="user root;"
  cat > "$dir/origin.conf" <<EOC
$user_line pid $dir/o.pid; error_log $dir/o.err warn; events { worker_connections 8192; }
worker_processes 1; http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$port backlog=4096; root $dir;
    location / { add_header Cache-Control "max-age=3600"; } } }
EOC
}
