use std::sync::Arc;

use super::*;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Applied, Command, Refusal};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use outpost_proto::pb;

fn dict(name: &str, capacity_bytes: u64) -> pb::SharedDict {
    pb::SharedDict {
        name: name.into(),
        capacity_bytes,
    }
}

/// The store with the state machine that writes it, fed entries as the log would.
struct Machine {
    store: Arc<Store>,
    sm: StateMachine,
    next_index: u64,
}

impl Machine {
    async fn open(path: &Path) -> Machine {
        let store = Arc::new(Store::open(path).await.unwrap());
        let sm = StateMachine::new(store.clone(), Default::default());
        let mut m = Machine {
            store,
            sm,
            next_index: 1,
        };
        let (applied, _) = m.sm.applied_state().await.unwrap();
        m.next_index = applied.map_or(1, |l| l.index + 1);
        m
    }

    async fn run(&mut self, command: Command) -> Applied {
        let entry = openraft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.next_index),
            payload: EntryPayload::Normal(command),
        };
        self.next_index += 1;
        self.sm.apply([entry]).await.unwrap().remove(0)
    }

    async fn set_dicts(&mut self, dicts: Vec<pb::SharedDict>) {
        let (mut config, revision) = self.store.working(DEFAULT_PARTITION).await.unwrap();
        config.shared_dicts = dicts;
        let applied = self
            .run(Command::SetWorking {
                partition: DEFAULT_PARTITION.into(),
                base_revision: revision,
                config_json: config_to_json(&config).unwrap(),
                at_ms: 1,
            })
            .await;
        assert_eq!(applied, Applied::Revision(revision + 1));
    }

    async fn release(&mut self, note: &str) -> Applied {
        self.run(Command::Release {
            partition: DEFAULT_PARTITION.into(),
            note: note.into(),
            staged: false,
            at_ms: 2,
        })
        .await
    }

    async fn rollback(&mut self, of: u64) -> Applied {
        self.run(Command::Rollback {
            partition: DEFAULT_PARTITION.into(),
            of,
            note: String::new(),
            at_ms: 3,
        })
        .await
    }

    async fn token(&mut self, name: &str, role: Role) -> String {
        let token = auth::new_token();
        let applied = self
            .run(Command::CreateToken {
                name: name.into(),
                role,
                sha256: auth::token_hash(&token),
                at_ms: 4,
            })
            .await;
        assert!(matches!(applied, Applied::Token(_)), "{applied:?}");
        token
    }
}

fn version(applied: &Applied) -> u64 {
    match applied {
        Applied::Release(r) => r.version,
        other => panic!("not a release: {other:?}"),
    }
}

#[tokio::test]
async fn releases_are_numbered_from_one_and_refuse_an_empty_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(&dir.path().join("cp.db")).await;
    assert!(
        m.store
            .latest_release(DEFAULT_PARTITION)
            .await
            .unwrap()
            .is_none()
    );

    m.set_dicts(vec![dict("a", 8192)]).await;
    assert_eq!(version(&m.release("first").await), 1);
    let r1 = m
        .store
        .release(DEFAULT_PARTITION, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r1.config.version, 1);
    assert_eq!(r1.created_at_ms, 2, "the time comes from the command");
    assert_eq!(r1.sha256, auth::sha256_hex(r1.config_json.as_bytes()));
    assert_eq!(
        m.release("again").await,
        Applied::Refused(Refusal::NothingToRelease)
    );

    m.set_dicts(vec![dict("a", 8192), dict("b", 16384)]).await;
    assert_eq!(version(&m.release("second").await), 2);
    let list = m.store.releases(DEFAULT_PARTITION).await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
}

#[tokio::test]
async fn an_edit_from_a_stale_revision_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(&dir.path().join("cp.db")).await;
    m.set_dicts(vec![dict("a", 8192)]).await;
    let stale = m
        .run(Command::SetWorking {
            partition: DEFAULT_PARTITION.into(),
            base_revision: 0,
            config_json: "{}".into(),
            at_ms: 1,
        })
        .await;
    assert_eq!(stale, Applied::Refused(Refusal::Conflict { current: 1 }));
    let garbage = m
        .run(Command::SetWorking {
            partition: DEFAULT_PARTITION.into(),
            base_revision: 1,
            config_json: "{not json".into(),
            at_ms: 1,
        })
        .await;
    assert_eq!(garbage, Applied::Refused(Refusal::BadConfig));
    assert_eq!(
        m.store
            .working_config(DEFAULT_PARTITION)
            .await
            .unwrap()
            .shared_dicts
            .len(),
        1
    );
}

#[tokio::test]
async fn rollback_is_a_new_release_with_old_content_and_resets_the_working_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(&dir.path().join("cp.db")).await;
    m.set_dicts(vec![dict("a", 8192)]).await;
    m.release("one").await;
    m.set_dicts(vec![dict("b", 8192)]).await;
    m.release("two").await;

    assert_eq!(version(&m.rollback(1).await), 3);
    let r3 = m
        .store
        .release(DEFAULT_PARTITION, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r3.rollback_of, Some(1));
    assert_eq!(r3.note, "rollback to version 1");
    assert_eq!(r3.config.shared_dicts, vec![dict("a", 8192)]);
    assert_eq!(
        m.store
            .working_config(DEFAULT_PARTITION)
            .await
            .unwrap()
            .shared_dicts,
        r3.config.shared_dicts
    );
    assert_eq!(
        m.rollback(9).await,
        Applied::Refused(Refusal::NoSuchRelease(9))
    );
}

#[tokio::test]
async fn subscribers_see_the_latest_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(&dir.path().join("cp.db")).await;
    let mut rx = m.store.subscribe(DEFAULT_PARTITION);
    assert!(rx.borrow_and_update().is_none());
    m.set_dicts(vec![dict("a", 8192)]).await;
    m.release("one").await;
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().as_ref().unwrap().version, 1);
}

#[tokio::test]
async fn tokens_are_checked_by_hash_and_bootstrap_happens_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(&dir.path().join("cp.db")).await;
    let admin = auth::new_token();
    let first = m
        .run(Command::BootstrapToken {
            sha256: auth::token_hash(&admin),
            at_ms: 1,
        })
        .await;
    assert!(matches!(first, Applied::Token(_)));
    let second = m
        .run(Command::BootstrapToken {
            sha256: auth::token_hash("opt_other"),
            at_ms: 1,
        })
        .await;
    assert_eq!(second, Applied::Refused(Refusal::TokensExist));
    let viewer = m.token("ci", Role::Viewer).await;
    let again = m
        .run(Command::CreateToken {
            name: "dup".into(),
            role: Role::Admin,
            sha256: auth::token_hash(&viewer),
            at_ms: 1,
        })
        .await;
    assert_eq!(again, Applied::Refused(Refusal::DuplicateToken));
    let store = &m.store;
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
    let mut m = Machine::open(&dir.path().join("cp.db")).await;
    let hello = NodeHello {
        id: "edge-1".into(),
        kind: NodeKind::Edge,
        region: "eu".into(),
        labels: vec![("tier".into(), "staging".into())],
        addresses: vec!["192.0.2.1:443".into()],
    };
    m.run(Command::NodeSeen { hello, at_ms: 5 }).await;
    let report = |version, ok: bool, error: &str| Command::NodeReport {
        node_id: "edge-1".into(),
        version,
        ok,
        error: error.into(),
        at_ms: 6,
    };
    assert_eq!(m.run(report(3, true, "")).await, Applied::Done);
    assert_eq!(m.run(report(4, false, "bad lua")).await, Applied::Done);
    let nodes = m.store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].applied_version, Some(3));
    assert_eq!(nodes[0].rejected_version, Some(4));
    assert_eq!(nodes[0].last_error.as_deref(), Some("bad lua"));
    assert_eq!(nodes[0].labels["tier"], "staging");
    assert_eq!(nodes[0].last_heartbeat_ms, 6);
    let ghost = m
        .run(Command::NodeReport {
            node_id: "ghost".into(),
            version: 1,
            ok: true,
            error: String::new(),
            at_ms: 7,
        })
        .await;
    assert_eq!(ghost, Applied::Refused(Refusal::NoSuchNode("ghost".into())));
}

#[tokio::test]
async fn everything_survives_reopening_the_file_and_the_applied_index_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp.db");
    let token;
    {
        let mut m = Machine::open(&path).await;
        token = m.token("t", Role::Editor).await;
        m.set_dicts(vec![dict("a", 8192)]).await;
        m.release("one").await;
        m.set_dicts(vec![dict("a", 8192), dict("pending", 8192)])
            .await;
        m.store.close().await;
    }
    let m = Machine::open(&path).await;
    assert_eq!(m.next_index, 5, "four entries were applied");
    let store = &m.store;
    assert_eq!(
        store.authenticate(&token).await.unwrap(),
        Some(Role::Editor)
    );
    assert_eq!(
        store
            .latest_release(DEFAULT_PARTITION)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        store
            .subscribe(DEFAULT_PARTITION)
            .borrow()
            .as_ref()
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        store
            .working_config(DEFAULT_PARTITION)
            .await
            .unwrap()
            .shared_dicts
            .len(),
        2
    );
}

#[tokio::test]
async fn a_snapshot_carries_the_whole_state_to_another_store() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Machine::open(&dir.path().join("a.db")).await;
    let token = a.token("t", Role::Admin).await;
    a.set_dicts(vec![dict("a", 8192)]).await;
    a.release("one").await;
    a.rollback(1).await;
    let snapshot = a.sm.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(4));

    let mut b = Machine::open(&dir.path().join("b.db")).await;
    b.set_dicts(vec![dict("other", 8192)]).await;
    let mut rx = b.store.subscribe(DEFAULT_PARTITION);
    b.sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let (applied, _) = b.sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(4));
    assert_eq!(b.store.releases(DEFAULT_PARTITION).await.unwrap().len(), 2);
    assert_eq!(
        b.store
            .release(DEFAULT_PARTITION, 2)
            .await
            .unwrap()
            .unwrap()
            .rollback_of,
        Some(1)
    );
    assert_eq!(
        b.store.authenticate(&token).await.unwrap(),
        Some(Role::Admin)
    );
    assert_eq!(
        b.store
            .working_config(DEFAULT_PARTITION)
            .await
            .unwrap()
            .shared_dicts,
        vec![dict("a", 8192)]
    );
    assert_eq!(rx.borrow_and_update().as_ref().unwrap().version, 2);
    let current = b.sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
}
