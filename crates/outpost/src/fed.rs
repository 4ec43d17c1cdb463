//! The flags and the start-up of a node fed by the control plane (`outpost edge` and
//! `outpost gslb` with `--control-plane`): which control-plane nodes, who it is, and its
//! certificate of the cluster.

use std::path::PathBuf;

use anyhow::Context;
use outpost_control_plane::pki::NodeRole;
use outpost_control_plane::pki::identity::TlsIdentity;
use outpost_control_plane::pki::join::{self, JoinError, JoinTicket};

#[derive(clap::Args, Clone)]
pub struct FedArgs {
    /// Take the config from the control plane: the gRPC URLs of its nodes, comma separated,
    /// tried in turn (e.g. `https://10.0.0.5:9401,https://10.0.0.6:9401`). The last applied
    /// config is kept in --state-dir.
    #[arg(long, conflicts_with = "config")]
    pub control_plane: Option<String>,
    /// A label for the control plane, `KEY=VALUE`, repeatable; `staging=true` gets staged
    /// releases, `partition=NAME` a partition's.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A join token (`POST /api/v1/join-tokens`) with this node's role: on the first start the
    /// node gets its certificate with it and keeps it in --state-dir/tls; later starts need
    /// none.
    #[arg(
        long,
        env = "OUTPOST_JOIN_TOKEN",
        hide_env_values = true,
        requires = "control_plane"
    )]
    pub join_token: Option<String>,
    /// This node's name for the control plane (default: the host name).
    #[arg(long)]
    pub node_id: Option<String>,
    /// This node's region, reported to the control plane.
    #[arg(long, default_value = "")]
    pub region: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

impl FedArgs {
    pub fn node_id(&self, default: &str) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| default.into())
        })
    }

    /// The `https://` URLs in --control-plane.
    pub fn control_planes(&self) -> anyhow::Result<Vec<String>> {
        let urls: Vec<String> = self
            .control_plane
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        anyhow::ensure!(!urls.is_empty(), "--control-plane: no URL given");
        if let Some(plain) = urls.iter().find(|u| !u.starts_with("https://")) {
            anyhow::bail!(
                "--control-plane {plain}: the control plane's gRPC is TLS: use https://HOST:PORT"
            );
        }
        Ok(urls)
    }

    /// The certificate kept in `state_dir/tls`; on the first start, one got with --join-token
    /// from the first control-plane node that answers.
    pub async fn identity(
        &self,
        role: NodeRole,
        node_id: &str,
        control_planes: &[String],
        state_dir: &std::path::Path,
    ) -> anyhow::Result<TlsIdentity> {
        let dir: PathBuf = state_dir.join("tls");
        if let Some(id) = TlsIdentity::load(&dir)? {
            return Ok(id);
        }
        let Some(token) = &self.join_token else {
            anyhow::bail!(
                "{}: no certificate yet: the first start needs --join-token (a token with role {})",
                dir.display(),
                role.as_str()
            );
        };
        let mut unreachable = Vec::new();
        for url in control_planes {
            let ticket = JoinTicket {
                url: url.clone(),
                token: token.clone(),
            };
            match join::load_or_join(&dir, Some(&ticket), role, node_id, &[], None).await {
                Ok(id) => return Ok(id),
                Err(e @ JoinError::Connect { .. }) => unreachable.push(e.to_string()),
                Err(e) => return Err(e).context("joining the cluster"),
            }
        }
        anyhow::bail!("no control plane answered: {}", unreachable.join("; "))
    }
}
