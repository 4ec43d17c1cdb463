# The cache settings of the suite's docker/nginx/nginx.conf (proxy_cache, proxy_cache_revalidate), on 127.0.0.1.
worker_processes 1;
pid @R@/nginx.pid;
error_log @R@/logs/error.log warn;
events { worker_connections 2048; }
http {
    access_log off;
    client_body_temp_path @R@/cache/tmp/body;
    fastcgi_temp_path @R@/cache/tmp/fastcgi;
    uwsgi_temp_path @R@/cache/tmp/uwsgi;
    scgi_temp_path @R@/cache/tmp/scgi;
    proxy_cache_path @R@/cache/data levels=1:2 keys_zone=my-cache:8m max_size=1000m inactive=600m;
    proxy_temp_path @R@/cache/tmp/proxy;

    server {
        listen 127.0.0.1:@PORT@;

        location / {
            proxy_pass http://127.0.0.1:@ORIGIN_PORT@;
            proxy_cache my-cache;
            proxy_cache_revalidate on;
            proxy_http_version 1.1;
        }
    }
}
