//! A config as the changes from another one: what the control plane sends a node that holds a
//! recent release, so that changing one object costs bytes in proportion to that object.
//!
//! Both directions are pure functions. [`make`] returns `None` when applying its delta would not
//! give back exactly the new config (duplicate names, say); the caller then sends the whole
//! config, so a delta is only ever sent when it is exact.

use crate::controlplane::v1::ConfigDelta;
use crate::pb::Config;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the delta is for version {expected}, the node holds {held}")]
    WrongBase { expected: u64, held: u64 },
    #[error("{kind}: the delta removes {name:?}, which the base does not have")]
    UnknownName { kind: &'static str, name: String },
    #[error("{kind}: the new order does not name each object exactly once")]
    BadOrder { kind: &'static str },
}

/// The changes that turn `base` into `new`, or `None` when no delta reproduces `new` exactly.
/// Only the object fields are set; the caller fills in the version and release metadata.
pub fn make(base: &Config, new: &Config) -> Option<ConfigDelta> {
    let mut d = ConfigDelta::default();
    (
        d.upsert_applications,
        d.remove_applications,
        d.order_applications,
    ) = diff_list(&base.applications, &new.applications, |a| &a.name);
    (d.upsert_upstreams, d.remove_upstreams, d.order_upstreams) =
        diff_list(&base.upstreams, &new.upstreams, |u| &u.name);
    (
        d.upsert_certificates,
        d.remove_certificates,
        d.order_certificates,
    ) = diff_list(&base.certificates, &new.certificates, |c| &c.name);
    (
        d.upsert_lua_modules,
        d.remove_lua_modules,
        d.order_lua_modules,
    ) = diff_list(&base.lua_modules, &new.lua_modules, |m| &m.name);
    (
        d.upsert_shared_dicts,
        d.remove_shared_dicts,
        d.order_shared_dicts,
    ) = diff_list(&base.shared_dicts, &new.shared_dicts, |s| &s.name);
    if base.server != new.server {
        d.server = Some(new.server.clone().unwrap_or_default());
    }
    if base.gslb != new.gslb {
        d.gslb = Some(new.gslb.clone().unwrap_or_default());
    }
    if base.lua_runtime != new.lua_runtime {
        d.lua_runtime = Some(new.lua_runtime.clone().unwrap_or_default());
    }
    d.base_version = base.version;
    let mut rebuilt = apply(base, &d).ok()?;
    rebuilt.version = new.version;
    (rebuilt == *new).then_some(d)
}

/// `base` with the delta's changes; its `version` is the delta's `version`.
pub fn apply(base: &Config, d: &ConfigDelta) -> Result<Config, DeltaError> {
    if base.version != d.base_version {
        return Err(DeltaError::WrongBase {
            expected: d.base_version,
            held: base.version,
        });
    }
    let mut out = base.clone();
    out.version = d.version;
    out.applications = apply_list(
        "applications",
        &base.applications,
        &d.upsert_applications,
        &d.remove_applications,
        &d.order_applications,
        |a| &a.name,
    )?;
    out.upstreams = apply_list(
        "upstreams",
        &base.upstreams,
        &d.upsert_upstreams,
        &d.remove_upstreams,
        &d.order_upstreams,
        |u| &u.name,
    )?;
    out.certificates = apply_list(
        "certificates",
        &base.certificates,
        &d.upsert_certificates,
        &d.remove_certificates,
        &d.order_certificates,
        |c| &c.name,
    )?;
    out.lua_modules = apply_list(
        "lua_modules",
        &base.lua_modules,
        &d.upsert_lua_modules,
        &d.remove_lua_modules,
        &d.order_lua_modules,
        |m| &m.name,
    )?;
    out.shared_dicts = apply_list(
        "shared_dicts",
        &base.shared_dicts,
        &d.upsert_shared_dicts,
        &d.remove_shared_dicts,
        &d.order_shared_dicts,
        |s| &s.name,
    )?;
    if let Some(server) = &d.server {
        out.server = Some(server.clone());
    }
    if let Some(gslb) = &d.gslb {
        // An empty section is how a delta says the section was removed.
        out.gslb = (*gslb != Default::default()).then(|| gslb.clone());
    }
    if let Some(rt) = &d.lua_runtime {
        // As for gslb: an empty section says it was removed.
        out.lua_runtime = (*rt != Default::default()).then(|| rt.clone());
    }
    Ok(out)
}

/// (changed or added objects, removed names, new order of names if applying the first two
/// would not give it).
fn diff_list<T: Clone + PartialEq>(
    base: &[T],
    new: &[T],
    name: fn(&T) -> &String,
) -> (Vec<T>, Vec<String>, Vec<String>) {
    let removed: Vec<String> = base
        .iter()
        .filter(|b| !new.iter().any(|n| name(n) == name(b)))
        .map(|b| name(b).clone())
        .collect();
    let upserts: Vec<T> = new
        .iter()
        .filter(|n| !base.iter().any(|b| name(b) == name(n) && b == *n))
        .cloned()
        .collect();
    let order = match apply_list("", base, &upserts, &removed, &[], name) {
        Ok(got) if got.iter().map(name).eq(new.iter().map(name)) => Vec::new(),
        _ => new.iter().map(|n| name(n).clone()).collect(),
    };
    (upserts, removed, order)
}

fn apply_list<T: Clone>(
    kind: &'static str,
    base: &[T],
    upserts: &[T],
    removes: &[String],
    order: &[String],
    name: fn(&T) -> &String,
) -> Result<Vec<T>, DeltaError> {
    let mut out = base.to_vec();
    for r in removes {
        let before = out.len();
        out.retain(|o| name(o) != r);
        if out.len() == before {
            return Err(DeltaError::UnknownName {
                kind,
                name: r.clone(),
            });
        }
    }
    for u in upserts {
        match out.iter_mut().find(|o| name(o) == name(u)) {
            Some(slot) => *slot = u.clone(),
            None => out.push(u.clone()),
        }
    }
    if order.is_empty() {
        return Ok(out);
    }
    if order.len() != out.len() {
        return Err(DeltaError::BadOrder { kind });
    }
    let mut ordered = Vec::with_capacity(out.len());
    for n in order {
        let i = out
            .iter()
            .position(|o| name(o) == n)
            .ok_or(DeltaError::BadOrder { kind })?;
        ordered.push(out.swap_remove(i));
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Application, ServerSettings, Upstream};
    use prost::Message;

    fn app(name: &str, host: &str) -> Application {
        Application {
            name: name.into(),
            domains: vec![host.into()],
            ..Default::default()
        }
    }

    fn config(version: u64, apps: &[(&str, &str)]) -> Config {
        Config {
            version,
            applications: apps.iter().map(|(n, h)| app(n, h)).collect(),
            upstreams: vec![Upstream {
                name: "u".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn round_trip(base: &Config, new: &Config) -> ConfigDelta {
        let mut d = make(base, new).expect("a delta");
        d.version = new.version;
        assert_eq!(apply(base, &d).unwrap(), *new);
        d
    }

    #[test]
    fn one_changed_object_is_all_the_delta_carries() {
        let names: Vec<(String, String)> = (0..500)
            .map(|i| (format!("app{i}"), format!("h{i}.example")))
            .collect();
        let refs: Vec<(&str, &str)> = names
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let base = config(7, &refs);
        let mut new = base.clone();
        new.version = 8;
        new.applications[250].domains.push("extra.example".into());
        let d = round_trip(&base, &new);
        assert_eq!(d.upsert_applications.len(), 1);
        assert!(d.remove_applications.is_empty() && d.order_applications.is_empty());
        assert!(d.upsert_upstreams.is_empty() && d.server.is_none());
        let one = new.applications[250].encoded_len();
        assert!(d.encoded_len() < one + 64, "{} vs {one}", d.encoded_len());
        assert!(d.encoded_len() * 100 < new.encoded_len());
    }

    #[test]
    fn adds_removes_reorders_and_server_settings() {
        let base = config(1, &[("a", "a"), ("b", "b"), ("c", "c")]);
        // Removed and added.
        let mut new = config(2, &[("a", "a"), ("c", "c"), ("d", "d")]);
        let d = round_trip(&base, &new);
        assert_eq!(d.remove_applications, vec!["b".to_string()]);
        assert!(d.order_applications.is_empty());
        // Reordered: the order is sent.
        new = config(2, &[("c", "c"), ("a", "a"), ("b", "b")]);
        let d = round_trip(&base, &new);
        assert!(d.upsert_applications.is_empty());
        assert_eq!(d.order_applications, vec!["c", "a", "b"]);
        // Inserted in the middle.
        new = config(2, &[("a", "a"), ("x", "x"), ("b", "b"), ("c", "c")]);
        round_trip(&base, &new);
        // Server settings.
        new = base.clone();
        new.version = 2;
        new.server = Some(ServerSettings {
            idle_timeout_ms: 5,
            ..Default::default()
        });
        assert!(round_trip(&base, &new).server.is_some());
        // Nothing changed.
        new = base.clone();
        new.version = 2;
        assert_eq!(round_trip(&base, &new).encoded_len(), 4);
    }

    #[test]
    fn the_gslb_section_is_sent_whole_when_it_changes_and_empty_when_removed() {
        let base = config(1, &[("a", "a")]);
        let mut new = base.clone();
        new.version = 2;
        new.gslb = Some(crate::gslb::v1::GslbConfig {
            axfr_allow: vec!["127.0.0.1".into()],
            ..Default::default()
        });
        let added = round_trip(&base, &new);
        assert_eq!(added.gslb, new.gslb);
        assert!(added.upsert_applications.is_empty());
        let mut back = new.clone();
        back.version = 3;
        back.gslb = None;
        assert_eq!(round_trip(&new, &back).gslb, Some(Default::default()));
    }

    #[test]
    fn the_lua_runtime_is_sent_whole_when_it_changes_and_empty_when_removed() {
        let base = config(1, &[("a", "a")]);
        let mut new = base.clone();
        new.version = 2;
        new.lua_runtime = Some(crate::pb::LuaRuntime {
            instructions_per_request: 5000,
            sandbox: true,
            ..Default::default()
        });
        let added = round_trip(&base, &new);
        assert_eq!(added.lua_runtime, new.lua_runtime);
        assert!(added.upsert_applications.is_empty() && added.server.is_none());
        let mut back = new.clone();
        back.version = 3;
        back.lua_runtime = None;
        assert_eq!(
            round_trip(&new, &back).lua_runtime,
            Some(Default::default())
        );
        // Unchanged: not in the delta.
        let mut same = new.clone();
        same.version = 3;
        assert_eq!(round_trip(&new, &same).lua_runtime, None);
    }

    #[test]
    fn no_delta_when_it_cannot_be_exact() {
        let base = config(1, &[("a", "a")]);
        let new = config(2, &[("a", "a"), ("a", "b")]);
        assert_eq!(make(&base, &new), None);
    }

    #[test]
    fn a_delta_for_another_base_or_naming_unknown_objects_is_refused() {
        let base = config(1, &[("a", "a")]);
        let new = config(2, &[("b", "b")]);
        let mut d = make(&base, &new).unwrap();
        d.version = 2;
        let other = config(5, &[("a", "a")]);
        assert_eq!(
            apply(&other, &d),
            Err(DeltaError::WrongBase {
                expected: 1,
                held: 5
            })
        );
        d.remove_applications = vec!["zzz".into()];
        assert!(matches!(
            apply(&base, &d),
            Err(DeltaError::UnknownName { .. })
        ));
        d.remove_applications.clear();
        d.order_applications = vec!["b".into(), "b".into()];
        assert!(matches!(apply(&base, &d), Err(DeltaError::BadOrder { .. })));
    }
}
