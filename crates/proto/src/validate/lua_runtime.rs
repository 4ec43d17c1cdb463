//! `lua_runtime`: the limits of each worker's Lua VM and of the requests it runs.

use super::{FieldPath, Report};
use crate::pb::LuaRuntime;

/// Below this a VM cannot hold its own `ngx` API and the bundled libraries with room to spare.
pub const MIN_MEMORY: u64 = 16 << 20;
/// The budget is checked every 1000 instructions (the Lua crate's `CHECK_EVERY`): a smaller
/// one could not be told apart from 1000.
pub const MIN_INSTRUCTIONS: u64 = 1000;
/// A request holding its worker's Lua for longer than this is a hang, not a budget.
pub const MAX_CPU_MS: u32 = 60_000;

pub(super) fn check(rt: &LuaRuntime, path: &FieldPath, report: &mut Report) {
    let m = rt.memory_limit_bytes;
    if m != 0 && m < MIN_MEMORY {
        report.error(
            &path.field("memory_limit_bytes"),
            format!("must be 0 (default, 1 GiB) or at least {MIN_MEMORY} (16 MiB), got {m}"),
        );
    }
    let i = rt.instructions_per_request;
    if i != 0 && i < MIN_INSTRUCTIONS {
        report.error(
            &path.field("instructions_per_request"),
            format!("must be 0 (no budget) or at least {MIN_INSTRUCTIONS}, got {i}"),
        );
    }
    let c = rt.cpu_ms_per_request;
    if c > MAX_CPU_MS {
        report.error(
            &path.field("cpu_ms_per_request"),
            format!("must be at most {MAX_CPU_MS} (1 min), got {c}"),
        );
    }
    if !rt.sandbox && !rt.sandbox_allowed_paths.is_empty() {
        // Without the sandbox every path is open: the list would be silently ignored.
        report.error(
            &path.field("sandbox_allowed_paths"),
            "only with sandbox: true",
        );
    }
    for (i, p) in rt.sandbox_allowed_paths.iter().enumerate() {
        let at = path.index("sandbox_allowed_paths", i);
        if p.contains('\0') {
            report.error(&at, "must not contain NUL");
        } else if !std::path::Path::new(p).is_absolute() {
            report.error(&at, format!("must be an absolute path, got {p:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{SourceFormat, parse_config};
    use crate::validate;

    fn errors(section: &str) -> Vec<String> {
        let cfg =
            parse_config(&format!("lua_runtime: {section}\n"), SourceFormat::Yaml).expect("parses");
        match validate(&cfg) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn zero_means_the_defaults_and_passes() {
        assert_eq!(errors("{}"), Vec::<String>::new());
        assert_eq!(
            errors("{memory_limit_bytes: 0, instructions_per_request: 0, cpu_ms_per_request: 0}"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn sensible_limits_and_a_sandbox_pass() {
        assert_eq!(
            errors(
                "{memory_limit_bytes: 16777216, instructions_per_request: 1000, \
                 cpu_ms_per_request: 60000, sandbox: true, \
                 sandbox_allowed_paths: [/var/lib/outpost, /etc/outpost/keys.json]}"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_memory_limit_below_16_mib_is_refused() {
        assert_eq!(
            errors("{memory_limit_bytes: 1048576}"),
            vec![
                "lua_runtime.memory_limit_bytes: must be 0 (default, 1 GiB) or at least \
                 16777216 (16 MiB), got 1048576"
            ]
        );
    }

    #[test]
    fn an_instruction_budget_below_one_check_is_refused() {
        assert_eq!(
            errors("{instructions_per_request: 999}"),
            vec![
                "lua_runtime.instructions_per_request: must be 0 (no budget) or at least 1000, \
                 got 999"
            ]
        );
    }

    #[test]
    fn a_cpu_budget_over_a_minute_is_refused() {
        assert_eq!(
            errors("{cpu_ms_per_request: 60001}"),
            vec!["lua_runtime.cpu_ms_per_request: must be at most 60000 (1 min), got 60001"]
        );
    }

    #[test]
    fn allowed_paths_must_be_absolute_and_need_the_sandbox() {
        assert_eq!(
            errors("{sandbox: true, sandbox_allowed_paths: [/srv/ok, data, \"\"]}"),
            vec![
                r#"lua_runtime.sandbox_allowed_paths[1]: must be an absolute path, got "data""#,
                r#"lua_runtime.sandbox_allowed_paths[2]: must be an absolute path, got """#,
            ]
        );
        assert_eq!(
            errors("{sandbox_allowed_paths: [/srv/ok]}"),
            vec!["lua_runtime.sandbox_allowed_paths: only with sandbox: true"]
        );
    }
}
