use super::*;
use outpost_proto::pb;

fn upstream(name: &str, address: &str) -> pb::Upstream {
    pb::Upstream {
        name: name.into(),
        peers: vec![pb::Peer {
            address: address.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn config(upstreams: Vec<pb::Upstream>) -> Config {
    Config {
        upstreams,
        ..Default::default()
    }
}

#[test]
fn identical_configs_have_no_changes_whatever_their_versions() {
    let mut a = config(vec![upstream("api", "10.0.0.1:80")]);
    let b = a.clone();
    a.version = 7;
    assert!(diff(&a, &b).is_empty());
}

#[test]
fn added_removed_and_modified_objects_are_listed_by_kind_then_name() {
    let old = config(vec![
        upstream("api", "10.0.0.1:80"),
        upstream("old", "10.0.0.9:80"),
    ]);
    let mut new = config(vec![
        upstream("zeta", "10.0.0.3:80"),
        upstream("api", "10.0.0.2:80"),
    ]);
    new.upstreams[1].keepalive = 32;
    new.shared_dicts.push(pb::SharedDict {
        name: "limits".into(),
        capacity_bytes: 8192,
    });
    let changes = diff(&old, &new);
    assert_eq!(
        changes,
        vec![
            Change {
                kind: "upstreams",
                name: "api".into(),
                op: Op::Modified,
                fields: vec!["keepalive".into(), "peers[0].address".into()],
            },
            Change {
                kind: "upstreams",
                name: "old".into(),
                op: Op::Removed,
                fields: vec![],
            },
            Change {
                kind: "upstreams",
                name: "zeta".into(),
                op: Op::Added,
                fields: vec![],
            },
            Change {
                kind: "shared_dicts",
                name: "limits".into(),
                op: Op::Added,
                fields: vec![],
            },
        ]
    );
    assert_eq!(
        to_text(&changes),
        "~ upstreams/api: keepalive, peers[0].address\n\
         - upstreams/old\n\
         + upstreams/zeta\n\
         + shared_dicts/limits\n"
    );
}

#[test]
fn reordering_objects_is_not_a_change() {
    let a = config(vec![
        upstream("a", "10.0.0.1:80"),
        upstream("b", "10.0.0.2:80"),
    ]);
    let b = config(vec![
        upstream("b", "10.0.0.2:80"),
        upstream("a", "10.0.0.1:80"),
    ]);
    assert!(diff(&a, &b).is_empty());
}

#[test]
fn a_list_that_changes_length_is_reported_as_a_whole() {
    let old = config(vec![upstream("api", "10.0.0.1:80")]);
    let mut new = old.clone();
    new.upstreams[0].peers.push(pb::Peer {
        address: "10.0.0.2:80".into(),
        ..Default::default()
    });
    assert_eq!(diff(&old, &new)[0].fields, vec!["peers".to_string()]);
}

#[test]
fn field_paths_use_proto_names() {
    let old = config(vec![upstream("api", "10.0.0.1:80")]);
    let mut new = old.clone();
    new.upstreams[0].connect_timeout_ms = 500;
    assert_eq!(
        diff(&old, &new)[0].fields,
        vec!["connect_timeout_ms".to_string()]
    );
}

#[test]
fn server_settings_are_one_object() {
    let old = Config::default();
    let new = Config {
        server: Some(pb::ServerSettings {
            max_header_bytes: 16384,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(to_text(&diff(&old, &new)), "+ server/server\n");
    let newer = Config {
        server: Some(pb::ServerSettings {
            max_header_bytes: 32768,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        to_text(&diff(&new, &newer)),
        "~ server/server: max_header_bytes\n"
    );
}
