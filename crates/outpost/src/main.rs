//! `outpost`: one binary, every role. It parses the command line, sets up logging and calls a
//! library's entry point; the logic lives in the library crates.

mod allocator;
mod control_plane;
mod ctl;
mod dev;
mod edge;
mod fed;
mod gslb;
mod reload;
mod watch;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: allocator::EdgeAllocator = allocator::EdgeAllocator;

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "An edge platform for people who run their own CDN"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an edge node from a config file (YAML or JSON); SIGHUP or a change to the file
    /// reloads it.
    Edge(edge::EdgeArgs),
    /// Run a GSLB server (authoritative DNS for edge nodes) from a config file (SIGHUP or a
    /// change to the file reloads it), or fed by the control plane.
    Gslb(gslb::GslbArgs),
    /// Run the whole system locally with a demo configuration.
    Dev(dev::DevArgs),
    /// Run a control-plane node: admin API, releases and gRPC push, replicated with Raft (the
    /// first node forms the cluster; others join it with --join).
    ControlPlane(control_plane::ControlPlaneArgs),
    /// Talk to the control plane's admin API: apply a config, diff, release, roll back, list
    /// nodes, purge caches.
    Ctl(ctl::CtlArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // hickory-server logs every query at INFO; a DNS server's log is not a query log.
            // openraft logs each step of an election at INFO (the control plane logs leader
            // changes itself).
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,hickory_server=warn,hickory_proto=warn,openraft=warn".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("control")
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Edge(args) => edge::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Gslb(args) => gslb::run(args).await,
            Command::ControlPlane(args) => control_plane::run(args).await,
            Command::Ctl(args) => ctl::run(args).await,
        }
    })
}
