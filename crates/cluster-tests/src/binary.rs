//! Finding the `outpost` binary the scenarios run.
//!
//! A test binary of this crate lives at `TARGET/PROFILE/deps/NAME-HASH`; the `outpost` binary
//! that `cargo test --workspace` built before running any test is `TARGET/PROFILE/outpost`.
//! The order of preference:
//!
//! 1. `OUTPOST_BIN`, when set (a binary built elsewhere, e.g. a release build);
//! 2. `PROFILE/outpost` next to this test binary's `deps/` directory;
//! 3. `$CARGO_TARGET_DIR/PROFILE/outpost`;
//! 4. none of these exists: `cargo build -p outpost` once (bounded by [`BUILD_LIMIT`]) into the
//!    same target dir, and that.
//!
//! `cargo test -p outpost-cluster-tests` alone does **not** rebuild `outpost` (a bin-only package
//! cannot be a dependency): after editing the binary's crates, run `cargo build -p outpost`
//! first, or `cargo test --workspace`. The path and age of the binary used is printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The longest the fallback `cargo build -p outpost` may take (a clean debug build of the
/// workspace takes about 7 minutes on two busy cores).
pub const BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The `outpost` binary, located (or built) once per test process.
pub fn outpost_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let path = locate().unwrap_or_else(|e| panic!("no outpost binary: {e}"));
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| format!("built {}s ago", d.as_secs()))
            .unwrap_or_else(|| "age unknown".into());
        eprintln!("cluster-tests: using {} ({age})", path.display());
        path
    })
}

/// `TARGET/PROFILE` of the running test binary, and the profile's name.
fn profile_dir() -> Option<(PathBuf, String)> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    let profile = deps.parent()?;
    let name = profile.file_name()?.to_str()?.to_string();
    Some((profile.to_path_buf(), name))
}

fn locate() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("OUTPOST_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("OUTPOST_BIN={} is not a file", p.display()))
        };
    }
    let (profile_dir, profile) =
        profile_dir().ok_or("cannot tell the target dir from the test binary's path")?;
    let mut candidates = vec![profile_dir.join("outpost")];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join(&profile).join("outpost"));
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let target_dir = profile_dir
        .parent()
        .ok_or("the profile dir has no parent")?;
    build(target_dir, &profile)?;
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| "cargo build -p outpost succeeded but left no binary".into())
}

/// `cargo build -p outpost` into `target_dir`, killed if it takes longer than [`BUILD_LIMIT`].
fn build(target_dir: &Path, profile: &str) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "outpost"])
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!(
        "cluster-tests: no outpost binary in {}; running cargo build -p outpost (at most {}s)",
        target_dir.display(),
        BUILD_LIMIT.as_secs()
    );
    let mut child = cmd.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    let deadline = Instant::now() + BUILD_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("cargo build -p outpost failed: {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "cargo build -p outpost took longer than {}s",
                    BUILD_LIMIT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for cargo: {e}")),
        }
    }
}
