use super::*;
use outpost_proto::pb;

fn dict(name: &str, capacity_bytes: u64) -> pb::SharedDict {
    pb::SharedDict {
        name: name.into(),
        capacity_bytes,
    }
}

async fn set_dicts(store: &Store, dicts: Vec<pb::SharedDict>) {
    let mut edit = store.edit().await.unwrap();
    edit.config.shared_dicts = dicts;
    edit.commit().await.unwrap();
}

#[tokio::test]
async fn releases_are_numbered_from_one_and_refuse_an_empty_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cp.db")).await.unwrap();
    assert!(store.latest_release().await.unwrap().is_none());

    set_dicts(&store, vec![dict("a", 8192)]).await;
    let r1 = store.create_release("first").await.unwrap();
    assert_eq!(r1.version, 1);
    assert_eq!(r1.config.version, 1);
    assert_eq!(r1.sha256, auth::sha256_hex(r1.config_json.as_bytes()));
    assert!(matches!(
        store.create_release("again").await,
        Err(StoreError::NothingToRelease)
    ));

    set_dicts(&store, vec![dict("a", 8192), dict("b", 16384)]).await;
    let r2 = store.create_release("second").await.unwrap();
    assert_eq!(r2.version, 2);
    let list = store.releases().await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(store.release(1).await.unwrap().unwrap(), r1);
}

#[tokio::test]
async fn rollback_is_a_new_release_with_old_content_and_resets_the_working_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cp.db")).await.unwrap();
    set_dicts(&store, vec![dict("a", 8192)]).await;
    store.create_release("one").await.unwrap();
    set_dicts(&store, vec![dict("b", 8192)]).await;
    store.create_release("two").await.unwrap();

    let r3 = store.rollback(1, None).await.unwrap();
    assert_eq!(r3.version, 3);
    assert_eq!(r3.rollback_of, Some(1));
    assert_eq!(r3.note, "rollback to version 1");
    assert_eq!(r3.config.shared_dicts, vec![dict("a", 8192)]);
    assert_eq!(
        store.working_config().await.unwrap().shared_dicts,
        r3.config.shared_dicts
    );
    assert!(matches!(
        store.rollback(9, None).await,
        Err(StoreError::NoSuchRelease(9))
    ));
}

#[tokio::test]
async fn subscribers_see_the_latest_release() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cp.db")).await.unwrap();
    let mut rx = store.subscribe();
    assert!(rx.borrow_and_update().is_none());
    set_dicts(&store, vec![dict("a", 8192)]).await;
    store.create_release("one").await.unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().as_ref().unwrap().version, 1);
}

#[tokio::test]
async fn tokens_are_checked_by_hash_and_bootstrap_happens_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cp.db")).await.unwrap();
    let admin = store.bootstrap_admin_token().await.unwrap().unwrap();
    assert!(store.bootstrap_admin_token().await.unwrap().is_none());
    let viewer = store.create_token("ci", Role::Viewer).await.unwrap();
    assert_eq!(store.authenticate(&admin).await.unwrap(), Some(Role::Admin));
    assert_eq!(
        store.authenticate(&viewer).await.unwrap(),
        Some(Role::Viewer)
    );
    assert_eq!(store.authenticate("opt_nope").await.unwrap(), None);
    let listed = store.tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].name, "ci");
}

#[tokio::test]
async fn reports_update_the_node_and_unknown_nodes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cp.db")).await.unwrap();
    let hello = NodeHello {
        id: "edge-1".into(),
        kind: NodeKind::Edge,
        region: "eu".into(),
        labels: vec![("tier".into(), "staging".into())],
        addresses: vec!["192.0.2.1:443".into()],
    };
    store.node_seen(&hello).await.unwrap();
    store.record_report("edge-1", 3, true, "").await.unwrap();
    store
        .record_report("edge-1", 4, false, "bad lua")
        .await
        .unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].applied_version, Some(3));
    assert_eq!(nodes[0].rejected_version, Some(4));
    assert_eq!(nodes[0].last_error.as_deref(), Some("bad lua"));
    assert_eq!(nodes[0].labels["tier"], "staging");
    assert!(matches!(
        store.record_report("ghost", 1, true, "").await,
        Err(StoreError::NoSuchNode(_))
    ));
}

#[tokio::test]
async fn everything_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp.db");
    let token;
    {
        let store = Store::open(&path).await.unwrap();
        token = store.create_token("t", Role::Editor).await.unwrap();
        set_dicts(&store, vec![dict("a", 8192)]).await;
        store.create_release("one").await.unwrap();
        set_dicts(&store, vec![dict("a", 8192), dict("pending", 8192)]).await;
        store.close().await;
    }
    let store = Store::open(&path).await.unwrap();
    assert_eq!(
        store.authenticate(&token).await.unwrap(),
        Some(Role::Editor)
    );
    assert_eq!(store.latest_release().await.unwrap().unwrap().version, 1);
    assert_eq!(store.subscribe().borrow().as_ref().unwrap().version, 1);
    assert_eq!(store.working_config().await.unwrap().shared_dicts.len(), 2);
}
