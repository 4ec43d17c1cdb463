//! The config's `lua_runtime` as the Lua crate's [`LuaLimits`]: what every worker's VM is
//! built with. Validation (`outpost_proto::validate`) has checked the ranges; zeros are the
//! defaults.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use outpost_lua::{LuaLimits, Sandbox};
use outpost_proto::pb;

/// The limits `rt` sets; unset or all zero: [`LuaLimits::default`] (a 1 GiB heap, no budget,
/// no sandbox).
pub fn limits(rt: Option<&pb::LuaRuntime>) -> LuaLimits {
    let Some(rt) = rt else {
        return LuaLimits::default();
    };
    let defaults = LuaLimits::default();
    LuaLimits {
        memory: match rt.memory_limit_bytes {
            0 => defaults.memory,
            // Only a 32-bit build could not hold it: there, the most it can address.
            n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        },
        instructions: (rt.instructions_per_request != 0).then_some(rt.instructions_per_request),
        cpu_time: (rt.cpu_ms_per_request != 0)
            .then(|| Duration::from_millis(u64::from(rt.cpu_ms_per_request))),
        sandbox: rt.sandbox.then(|| Sandbox {
            allowed_paths: rt.sandbox_allowed_paths.iter().map(PathBuf::from).collect(),
        }),
    }
}

/// Feeds what makes VMs differ into the Lua generation: changing a limit starts new VMs.
pub fn hash_into(limits: &LuaLimits, h: &mut impl Hasher) {
    limits.memory.hash(h);
    limits.instructions.hash(h);
    limits.cpu_time.hash(h);
    limits.sandbox.as_ref().map(|s| &s.allowed_paths).hash(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_section_and_zeros_are_the_lua_crates_defaults() {
        assert_eq!(limits(None), LuaLimits::default());
        assert_eq!(
            limits(Some(&pb::LuaRuntime::default())),
            LuaLimits::default()
        );
    }

    #[test]
    fn each_field_becomes_its_limit() {
        let rt = pb::LuaRuntime {
            memory_limit_bytes: 32 << 20,
            instructions_per_request: 5000,
            cpu_ms_per_request: 250,
            sandbox: true,
            sandbox_allowed_paths: vec!["/srv/lua".into()],
        };
        assert_eq!(
            limits(Some(&rt)),
            LuaLimits {
                memory: Some(32 << 20),
                instructions: Some(5000),
                cpu_time: Some(Duration::from_millis(250)),
                sandbox: Some(Sandbox {
                    allowed_paths: vec![PathBuf::from("/srv/lua")],
                }),
            }
        );
    }

    #[test]
    fn a_sandbox_with_no_path_differs_from_no_sandbox() {
        let hash = |l: &LuaLimits| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            hash_into(l, &mut h);
            h.finish()
        };
        let open = LuaLimits::default();
        let closed = LuaLimits {
            sandbox: Some(Sandbox::default()),
            ..LuaLimits::default()
        };
        assert_ne!(hash(&open), hash(&closed));
    }
}
