//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "keyproxy",
    version,
    about = "A local reverse proxy that holds LLM provider API keys so that agents do not",
    args_conflicts_with_subcommands = false
)]
pub struct Cli {
    /// Config file. Otherwise ./keyproxy.toml, then $XDG_CONFIG_HOME/keyproxy/keyproxy.toml,
    /// then the embedded default.
    #[arg(long, global = true, env = "KEYPROXY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address to listen on, overriding the config's `listen`.
    #[arg(long, env = "KEYPROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve {
        /// Address to listen on, overriding the config's `listen`.
        #[arg(long, env = "KEYPROXY_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Load config and keys as serve would, print every profile and problem; exit 0 only when
    /// every route's default profile has a key.
    Check {
        /// Print JSON, whether the check passes or fails.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when a running keyproxy answers 200 on /_keyproxy/health, else 1; for container
    /// health checks.
    Health {
        /// URL to ask. Default: /_keyproxy/health on the configured listen address.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// How long to wait for the answer.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
