//! `outpost ctl`: the command-line client of the control plane's admin REST API.
//!
//! This file parses the command line and runs each command as a few API calls; the pieces live
//! under `ctl/`: `client.rs` (HTTP, and the API's errors as one message), `output.rs` (tables
//! and text from the API's JSON) and `apply.rs` (a YAML or JSON file to the working config).
//! Every command prints for people by default and the API's own JSON with `-o json`. A failure
//! is one message naming the HTTP status and the API's words, and a non-zero exit.

mod apply;
mod client;
mod output;

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use client::{Client, DEFAULT_SERVER};

#[derive(Args)]
pub struct CtlArgs {
    /// The admin API of any control-plane node (`http://host:port`).
    #[arg(long, env = "OUTPOST_SERVER", default_value = DEFAULT_SERVER, global = true)]
    server: String,
    /// An API token (`opt_…`); `outpost control-plane` prints the first admin token once.
    #[arg(long, env = "OUTPOST_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// How to print replies: for people, or the API's JSON as it came.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text, global = true)]
    output: Format,
    /// The partition whose config and releases to work on (`default` when left out).
    #[arg(long, env = "OUTPOST_PARTITION", global = true)]
    partition: Option<String>,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS", global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Make the working config equal to a YAML or JSON file, then show what is pending.
    Apply {
        /// The config file (YAML or JSON); `-` reads standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
    },
    /// Show the changes to the working config since the last release.
    Diff {
        /// Print the API's JSON (the same as `-o json`).
        #[arg(long)]
        json: bool,
    },
    /// Release the working config as the next version.
    Release {
        /// What this release is for (kept with it and shown by `releases`).
        #[arg(short = 'm', long = "message", value_name = "NOTE")]
        note: String,
        /// Send it to nodes labelled `staging` only, until `promote`.
        #[arg(long)]
        staged: bool,
    },
    /// Send a staged release to every node.
    Promote {
        /// The staged version.
        version: u64,
    },
    /// Release an earlier version's config again, as a new version.
    Rollback {
        /// The version whose config to release again.
        version: u64,
        /// A note for the new release (the control plane writes one if left out).
        #[arg(short = 'm', long = "message", value_name = "NOTE")]
        note: Option<String>,
    },
    /// List the releases, newest first.
    Releases,
    /// List the edge and GSLB nodes: the version each runs, its last error, when last seen.
    Nodes,
    /// Show the control-plane cluster: leader, term, members.
    Cluster,
    /// Remove cached responses on every edge node.
    Purge(PurgeArgs),
    /// Take an edge node out of GSLB answers (it keeps serving the clients it has).
    Drain {
        /// The node's id.
        node: String,
    },
    /// Put a drained edge node back into GSLB answers (when its probes pass).
    Undrain {
        /// The node's id.
        node: String,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["url", "prefix", "tag", "all"])))]
struct PurgeArgs {
    /// One URL: `scheme://host/path?query` (the host without its port).
    #[arg(long)]
    url: Option<String>,
    /// Every URL that starts with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Every response tagged so by its origin (`Surrogate-Key` or `Cache-Tag`).
    #[arg(long)]
    tag: Option<String>,
    /// Everything in every cache.
    #[arg(long)]
    all: bool,
    /// Mark stale instead of removing: revalidated next time, still served while stale if the
    /// cache rules allow it.
    #[arg(long)]
    soft: bool,
}

impl PurgeArgs {
    /// The body of `POST /api/v1/purges`: the same JSON as an edge's `POST /cache/purge`.
    fn body(&self) -> Value {
        let mut body = if let Some(url) = &self.url {
            json!({ "url": url })
        } else if let Some(prefix) = &self.prefix {
            json!({ "prefix": prefix })
        } else if let Some(tag) = &self.tag {
            json!({ "tag": tag })
        } else {
            json!({ "all": true })
        };
        if self.soft {
            body["soft"] = json!(true);
        }
        body
    }
}

/// Runs one command. A failure is printed here, as `error: ` and the message with its causes
/// (not as the binary's `Error:` with a backtrace when `RUST_BACKTRACE` is set: a refused
/// request is an answer, not a crash), and the process exits with status 1.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    if let Err(e) = execute(args).await {
        let _ = std::io::stdout().flush();
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn execute(args: CtlArgs) -> anyhow::Result<()> {
    let client = Client::new(
        &args.server,
        args.token,
        Duration::from_secs(args.timeout.max(1)),
    )?
    .with_partition(args.partition.clone());
    let json_out = args.output == Format::Json;
    let c = &client;
    match args.command {
        CtlCommand::Apply { file } => emit(&apply::run(c, &file, json_out).await?),
        CtlCommand::Diff { json } => {
            let reply = c.get("/api/v1/changes").await?;
            show(json_out || json, &reply, output::changes)
        }
        CtlCommand::Release { note, staged } => {
            let body = json!({ "note": note, "staged": staged });
            let reply = c.post("/api/v1/releases", &body).await?;
            show(json_out, &reply, output::release_made)
        }
        CtlCommand::Promote { version } => {
            let path = format!("/api/v1/releases/{version}/promote");
            let reply = c.post(&path, &json!({})).await?;
            show(json_out, &reply, output::release_made)
        }
        CtlCommand::Rollback { version, note } => {
            let body = note.map_or(json!({}), |note| json!({ "note": note }));
            let path = format!("/api/v1/releases/{version}/rollback");
            let reply = c.post(&path, &body).await?;
            show(json_out, &reply, output::release_made)
        }
        CtlCommand::Releases => {
            let reply = c.get("/api/v1/releases").await?;
            show(json_out, &reply, output::releases)
        }
        CtlCommand::Nodes => {
            let reply = c.get("/api/v1/nodes").await?;
            show(json_out, &reply, |r| output::nodes(r, now_ms()))
        }
        CtlCommand::Cluster => {
            let reply = c.get("/api/v1/cluster").await?;
            show(json_out, &reply, output::cluster)
        }
        CtlCommand::Purge(p) => {
            let body = p.body();
            let reply = c.post("/api/v1/purges", &body).await?;
            show(json_out, &reply, |r| Ok(output::purge_accepted(&body, r)))
        }
        CtlCommand::Drain { node } => {
            let reply = c
                .post(&format!("/api/v1/nodes/{node}/drain"), &json!({}))
                .await?;
            show(json_out, &reply, |_| {
                Ok(format!(
                    "{node}: drained: GSLB servers no longer answer with it\n"
                ))
            })
        }
        CtlCommand::Undrain { node } => {
            let reply = c
                .post(&format!("/api/v1/nodes/{node}/undrain"), &json!({}))
                .await?;
            show(json_out, &reply, |_| {
                Ok(format!("{node}: back in GSLB answers (when healthy)\n"))
            })
        }
    }
}

/// Prints the reply as JSON, or as `text` makes it for people.
fn show(
    json_out: bool,
    reply: &Value,
    text: impl FnOnce(&Value) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if json_out {
        emit(&format!("{}\n", serde_json::to_string_pretty(reply)?))
    } else {
        emit(&text(reply)?)
    }
}

/// Writes to standard output. A reader that went away (`outpost ctl releases | head -1`) ends
/// the output quietly, as it would for `ls`.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).map(|c| c.ctl)
    }

    fn purge_body(args: &[&str]) -> Value {
        match parse(args).unwrap().command {
            CtlCommand::Purge(p) => p.body(),
            _ => panic!("not a purge"),
        }
    }

    #[test]
    fn a_purge_sends_exactly_one_selector_as_the_edge_takes_it() {
        assert_eq!(
            purge_body(&["purge", "--url", "http://a/b"]),
            json!({"url": "http://a/b"})
        );
        assert_eq!(
            purge_body(&["purge", "--tag", "t", "--soft"]),
            json!({"tag": "t", "soft": true})
        );
        assert_eq!(
            purge_body(&["purge", "--prefix", "http://a/img/"]),
            json!({"prefix": "http://a/img/"})
        );
        assert_eq!(purge_body(&["purge", "--all"]), json!({"all": true}));
        assert!(parse(&["purge"]).is_err());
        assert!(parse(&["purge", "--url", "u", "--tag", "t"]).is_err());
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let a = parse(&["diff", "-o", "json", "--server", "cp:1"]).unwrap();
        assert!(a.output == Format::Json && a.server == "cp:1");
        let a = parse(&["-o", "json", "nodes"]).unwrap();
        assert!(a.output == Format::Json);
    }

    #[test]
    fn release_needs_a_note() {
        assert!(parse(&["release"]).is_err());
        assert!(parse(&["release", "-m", "why"]).is_ok());
    }
}
