//! The admin API over real HTTP against a real SQLite file.

mod support;

use support::{APP_WWW, Api, UPSTREAM_API, start};

#[tokio::test]
async fn requests_without_a_known_token_are_refused_and_roles_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let admin = Api::new(&cp, cp.bootstrap_token().expect("first run prints a token"));
    assert_eq!(
        Api::new(&cp, "opt_wrong")
            .get("/api/v1/config")
            .await
            .status,
        401
    );

    let r = admin
        .post("/api/v1/tokens", r#"{"name":"dash","role":"viewer"}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let viewer = Api::new(&cp, r.json()["token"].as_str().unwrap());
    assert_eq!(viewer.get("/api/v1/config").await.status, 200);
    assert_eq!(
        viewer
            .put("/api/v1/config/upstreams/api", UPSTREAM_API)
            .await
            .status,
        403
    );
    assert_eq!(viewer.get("/api/v1/tokens").await.status, 403);

    let r = admin
        .post("/api/v1/tokens", r#"{"name":"ci","role":"editor"}"#)
        .await;
    let editor = Api::new(&cp, r.json()["token"].as_str().unwrap());
    assert_eq!(
        editor
            .put("/api/v1/config/upstreams/api", UPSTREAM_API)
            .await
            .status,
        201
    );
    assert_eq!(
        editor
            .post("/api/v1/tokens", r#"{"name":"x","role":"admin"}"#)
            .await
            .status,
        403
    );
    // The openapi document needs no token.
    let doc = Api::new(&cp, "").get("/api/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json()["openapi"], "3.1.0");
    cp.shutdown().await;
}

#[tokio::test]
async fn objects_are_created_read_replaced_and_deleted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());

    assert_eq!(
        api.post("/api/v1/config/upstreams", UPSTREAM_API)
            .await
            .status,
        201
    );
    assert_eq!(
        api.post("/api/v1/config/upstreams", UPSTREAM_API)
            .await
            .status,
        409
    );
    let r = api.put("/api/v1/config/applications/www", APP_WWW).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let got = api.get("/api/v1/config/applications/www").await.json();
    assert_eq!(got["domains"][0], "www.example.com");

    // PUT without a name takes it from the path; a different name is refused.
    let r = api
        .put(
            "/api/v1/config/shared_dicts/limits",
            r#"{"capacityBytes": 16384}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        api.put(
            "/api/v1/config/shared_dicts/limits",
            r#"{"name":"other","capacityBytes":16384}"#
        )
        .await
        .status,
        400
    );
    let r = api
        .put(
            "/api/v1/config/shared_dicts/limits",
            r#"{"capacity_bytes": 32768}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let whole = api.get("/api/v1/config").await.json();
    assert_eq!(whole["sharedDicts"][0]["capacityBytes"], "32768");
    assert_eq!(whole["applications"].as_array().unwrap().len(), 1);

    assert_eq!(
        api.delete("/api/v1/config/shared_dicts/limits")
            .await
            .status,
        204
    );
    assert_eq!(
        api.delete("/api/v1/config/shared_dicts/limits")
            .await
            .status,
        404
    );
    assert_eq!(api.get("/api/v1/config/widgets").await.status, 404);
    cp.shutdown().await;
}

#[tokio::test]
async fn invalid_configs_are_refused_with_every_field_path_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());

    // An application naming an upstream that does not exist.
    let r = api.put("/api/v1/config/applications/www", APP_WWW).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let errors = r.json()["errors"].as_array().unwrap().clone();
    assert!(
        errors
            .iter()
            .any(|e| e["path"] == "applications[0].upstream"
                && e["message"].as_str().unwrap().contains("api")),
        "{errors:?}"
    );

    // Two bad fields in one dict: too small, and a bad name: both named.
    let r = api
        .put(
            "/api/v1/config",
            r#"{"sharedDicts":[{"name":"","capacityBytes":1}]}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let paths: Vec<String> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        paths.contains(&"shared_dicts[0].capacity_bytes".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"shared_dicts[0].name".to_string()),
        "{paths:?}"
    );

    // Deleting an upstream still referred to is refused too.
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    api.put("/api/v1/config/applications/www", APP_WWW).await;
    let r = api.delete("/api/v1/config/upstreams/api").await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json()["errors"][0]["path"], "applications[0].upstream");

    // Nothing bad was stored.
    let whole = api.get("/api/v1/config").await.json();
    assert!(whole.get("sharedDicts").is_none(), "{whole}");
    assert_eq!(whole["upstreams"].as_array().unwrap().len(), 1);

    // Bad JSON and unknown fields are 400s naming the problem.
    let r = api.put("/api/v1/config/upstreams/api", "{not json").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("line 1"),
        "{}",
        r.text
    );
    let r = api
        .put(
            "/api/v1/config/upstreams/api",
            r#"{"name":"api","pears":[]}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("pears"),
        "{}",
        r.text
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn changes_releases_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());

    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    let changes = api.get("/api/v1/changes").await.json();
    assert_eq!(changes["baseVersion"], serde_json::Value::Null);
    assert_eq!(changes["changes"][0]["op"], "added");
    assert_eq!(
        api.get("/api/v1/changes?format=text").await.text,
        "+ upstreams/api\n"
    );

    let r = api.post("/api/v1/releases", r#"{"note":"first"}"#).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["version"], 1);
    assert_eq!(
        api.post("/api/v1/releases", r#"{"note":"again"}"#)
            .await
            .status,
        409
    );
    assert_eq!(api.get("/api/v1/changes?format=text").await.text, "");

    api.put(
        "/api/v1/config/upstreams/api",
        r#"{"peers":[{"address":"127.0.0.1:9090"}]}"#,
    )
    .await;
    assert_eq!(
        api.get("/api/v1/changes?format=text").await.text,
        "~ upstreams/api: peers[0].address\n"
    );
    assert_eq!(
        api.post("/api/v1/releases", r#"{"note":"move"}"#)
            .await
            .status,
        201
    );

    let list = api.get("/api/v1/releases").await.json();
    let versions: Vec<u64> = list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![2, 1]);
    let one = api.get("/api/v1/releases/1").await.json();
    assert_eq!(one["note"], "first");
    assert_eq!(one["config"]["version"], "1");
    assert_eq!(
        one["config"]["upstreams"][0]["peers"][0]["address"],
        "127.0.0.1:8080"
    );
    assert_eq!(one["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(api.get("/api/v1/releases/9").await.status, 404);

    let r = api.post("/api/v1/releases/1/rollback", "").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["version"], 3);
    assert_eq!(r.json()["rollbackOf"], 1);
    let three = api.get("/api/v1/releases/3").await.json();
    assert_eq!(three["config"]["upstreams"], one["config"]["upstreams"]);
    assert_eq!(api.get("/api/v1/changes?format=text").await.text, "");
    assert_eq!(
        api.post("/api/v1/releases/7/rollback", "").await.status,
        404
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn everything_survives_a_restart_on_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let token = cp.bootstrap_token().unwrap().to_string();
    let api = Api::new(&cp, &token);
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    api.post("/api/v1/releases", r#"{"note":"kept"}"#).await;
    api.put("/api/v1/config/applications/www", APP_WWW).await;
    cp.shutdown().await;

    let cp = start(dir.path()).await;
    assert!(cp.bootstrap_token().is_none(), "no second bootstrap token");
    let api = Api::new(&cp, &token);
    let releases = api.get("/api/v1/releases").await.json();
    assert_eq!(releases["releases"][0]["note"], "kept");
    assert_eq!(
        api.get("/api/v1/changes?format=text").await.text,
        "+ applications/www\n"
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn concurrent_edits_of_different_objects_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let token = cp.bootstrap_token().unwrap().to_string();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = Api::new(&cp, &token);
        tasks.push(tokio::spawn(async move {
            api.put(
                &format!("/api/v1/config/shared_dicts/d{i}"),
                r#"{"capacityBytes": 8192}"#,
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let api = Api::new(&cp, &token);
    let dicts = api.get("/api/v1/config/shared_dicts").await.json();
    assert_eq!(dicts.as_array().unwrap().len(), 20);
    cp.shutdown().await;
}

#[tokio::test]
async fn lua_that_does_not_compile_is_refused_with_its_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    assert_eq!(
        api.post("/api/v1/config/upstreams", UPSTREAM_API)
            .await
            .status,
        201
    );
    let app = r#"{"name":"www","domains":["www.example.com"],
        "listeners":[{"address":"127.0.0.1:8443"}],"upstream":"api",
        "lua":{"access":{"inline":"if ngx.var.arg_x then\n  ngx.exit(403)\n"}}}"#;
    let r = api.post("/api/v1/config/applications", app).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let errors = r.json()["errors"].clone();
    assert_eq!(
        errors[0]["path"], "applications[0].lua.access.inline",
        "{errors}"
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("'end' expected"),
        "{errors}"
    );
    // Nothing was stored; the same code with its `end` is accepted.
    assert_eq!(
        api.get("/api/v1/config/applications").await.json(),
        serde_json::json!([])
    );
    let fixed = app.replace(r#"ngx.exit(403)\n"}"#, r#"ngx.exit(403)\nend"}"#);
    assert_eq!(
        api.post("/api/v1/config/applications", &fixed).await.status,
        201
    );
    let module = r#"{"name":"m","code":"local M = {}\nfunction M.f( return M"}"#;
    let r = api.post("/api/v1/config/lua_modules", module).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("lua_modules[0].code"), "{}", r.text);
    // So are a balancer and init_worker that do not compile.
    let balancer = r#"{"peers":[{"address":"127.0.0.1:8080"}],
        "luaBalancer":{"inline":"local b = require 'ngx.balancer'\nb.set_current_peer("}}"#;
    let r = api.put("/api/v1/config/upstreams/api", balancer).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("upstreams[0].lua_balancer.inline"),
        "{}",
        r.text
    );
    let mut whole = api.get("/api/v1/config").await.json();
    whole["luaInitWorker"] = serde_json::json!({"inline": "ngx.timer.every(1, function() end"});
    let r = api.put("/api/v1/config", &whole.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("lua_init_worker.inline"), "{}", r.text);
    whole["luaInitWorker"] = serde_json::json!({"inline": "local started = true"});
    assert_eq!(
        api.put("/api/v1/config", &whole.to_string()).await.status,
        200
    );
    let changes = api.get("/api/v1/changes?format=text").await.text;
    assert!(changes.contains("+ lua_init_worker"), "{changes}");
    cp.shutdown().await;
}

#[tokio::test]
async fn a_node_whose_raft_stopped_answers_503_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    assert_eq!(api.get("/healthz").await.status, 200);
    // What a storage failure does to Raft (it stops for good), without filling a disk.
    cp.cluster().raft().shutdown().await.unwrap();
    let why = tokio::time::timeout(std::time::Duration::from_secs(5), cp.raft_stopped())
        .await
        .expect("raft_stopped resolves");
    assert!(why.contains("raft stopped"), "{why}");
    let health = api.get("/healthz").await;
    assert_eq!(health.status, 503, "{}", health.text);
    let w = api
        .put(
            "/api/v1/config/shared_dicts/d",
            r#"{"capacityBytes": 8192}"#,
        )
        .await;
    assert_eq!(w.status, 503, "{}", w.text);
    assert!(w.text.contains("Raft stopped"), "{}", w.text);
    let metrics = api.get("/metrics").await.text;
    assert!(metrics.contains("outpost_cp_raft_running 0"), "{metrics}");
    assert!(metrics.contains("outpost_cp_raft_is_leader 0"), "{metrics}");
    cp.shutdown().await;
}
