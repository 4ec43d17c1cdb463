vcl 4.1;
# Builtin VCL behaviour (no custom logic), as in the suite's docker image; only the backend is set.
backend default {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
}
