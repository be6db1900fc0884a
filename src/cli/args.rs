//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

    /// Address to listen on (or, for commands that ask a running keyproxy, where it listens),
    /// overriding the config's `listen`.
    /// A host name is resolved (`localhost:8787` is 127.0.0.1:8787).
    #[arg(long, global = true, env = "KEYPROXY_LISTEN", value_name = "ADDR", value_parser = keyproxy::config::listen::listen_address)]
    pub listen: Option<SocketAddr>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Load config and keys as serve would, print every profile and problem; exit 0 only when
    /// every route's default profile has a key.
    ///
    /// It also asks the running keyproxy (on the configured listen address, or --listen) which
    /// keys it serves, and says where that differs from what this shell loads.
    Check {
        /// Print JSON, whether the check passes or fails.
        #[arg(long)]
        json: bool,
        /// A client token, when the running keyproxy has [[clients]].
        #[arg(
            long,
            env = "KEYPROXY_CLIENT_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
        /// The admin token, when the running keyproxy has one (sent instead of --token).
        #[arg(
            long,
            env = "KEYPROXY_ADMIN_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true
        )]
        admin_token: Option<String>,
        /// Also ask each provider whether each key is valid and has credit, without spending
        /// tokens (OpenRouter /api/v1/key, OpenAI and Anthropic /v1/models, Gemini
        /// /v1beta/models).
        #[arg(long)]
        live: bool,
    },
    /// Ask the running keyproxy which keys it serves (by profile and fingerprint, with sources
    /// and states), its version, uptime and last reload.
    Status {
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        running: Running,
    },
    /// What the running keyproxy counted: requests, tokens and cost per client, profile and
    /// model, today, this month and all time (UTC).
    Usage {
        /// Print /_keyproxy/usage as it is.
        #[arg(long)]
        json: bool,
        /// With [shared]: this replica's own counts, not the whole group's.
        #[arg(long)]
        local: bool,
        /// From this UTC day on (YYYY-MM-DD), instead of today, this month and all time.
        #[arg(long, value_name = "DATE", value_parser = keyproxy_day)]
        since: Option<String>,
        /// Up to this UTC day, included (YYYY-MM-DD).
        #[arg(long, value_name = "DATE", value_parser = keyproxy_day)]
        until: Option<String>,
        /// Sum the range per day, client, profile or model (default: day, when a range is given).
        #[arg(long, value_parser = ["day", "client", "profile", "model"])]
        by: Option<String>,
        #[command(flatten)]
        running: Running,
    },
    /// What the running keyproxy lets this client token do and what it has used: its profiles,
    /// models and limits, what is left and when each resets (/_keyproxy/me).
    Me {
        /// Print /_keyproxy/me as it is.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        running: Running,
    },
    /// Ask the running keyproxy to reload its config and keys (as SIGHUP does, without a pid);
    /// exits 0 when the reload kept no error.
    Reload {
        #[command(flatten)]
        running: Running,
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
    /// Add, list and remove keys in a keys file; a running keyproxy picks the change up.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Install keyproxy as a user service (systemd on Linux, launchd on macOS) with absolute
    /// paths, so it never depends on a shell's environment.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Set up and diagnose OpenClaw: `connect` points it at keyproxy, `status` says why it gets
    /// a 401.
    Openclaw {
        #[command(subcommand)]
        action: OpenclawAction,
    },
    /// Print shell completions for keyproxy on stdout, e.g. `keyproxy completions bash >
    /// ~/.local/share/bash-completion/completions/keyproxy`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print keyproxy's man page (roff) on stdout, e.g. `keyproxy man >
    /// ~/.local/share/man/man1/keyproxy.1`; with --dir, write a page per command there.
    Man {
        /// Write keyproxy.1 and a page per command (keyproxy-keys.1, ...) into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// How to reach the running keyproxy.
#[derive(Debug, Args)]
pub struct Running {
    /// The URL to ask. Default: the endpoint on the configured listen address (or --listen).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// A client token, when the running keyproxy has [[clients]].
    #[arg(
        long,
        env = "KEYPROXY_CLIENT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The admin token, when the running keyproxy has one (sent instead of --token).
    #[arg(
        long,
        env = "KEYPROXY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

impl Running {
    /// The token to send: the admin token when given, else the client token.
    pub fn bearer(&self) -> Option<&str> {
        self.admin_token.as_deref().or(self.token.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Write the unit (or launch agent) and start it at login and now.
    Install {
        /// Print the unit and where it would go; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write the unit but do not start it; print the commands that would.
        #[arg(long)]
        no_start: bool,
        /// The service manager to write for (default: this system's).
        #[arg(long, value_enum)]
        manager: Option<ServiceManager>,
    },
    /// Stop the service and remove its unit.
    Uninstall {
        #[arg(long, value_enum)]
        manager: Option<ServiceManager>,
    },
    /// Is the unit installed, does the service manager say it runs, and does keyproxy answer
    /// /_keyproxy/ready?
    Status {
        #[arg(long, value_enum)]
        manager: Option<ServiceManager>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceManager {
    Systemd,
    Launchd,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Read a key from a hidden prompt (or stdin when it is not a terminal) and add it to
    /// PROFILE's keys in the keys file: never an argument, so it is in no shell history or
    /// process list.
    Add {
        /// The profile, e.g. openrouter:default.
        profile: String,
        /// The keys file to write. Default: the config's first keys file.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Replace the profile's keys in the file instead of adding to them.
        #[arg(long)]
        replace: bool,
    },
    /// Every profile with its keys' fingerprints and sources, loaded as serve would.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the key with FINGERPRINT from PROFILE, or the whole profile.
    Remove {
        profile: String,
        /// As shown by `keys list`, e.g. sk-or-v1...968304f4.
        fingerprint: Option<String>,
        /// The keys file to write. Default: the config's first keys file.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OpenclawAction {
    /// Point an OpenClaw install at this keyproxy: sets models.providers.openrouter.baseUrl and
    /// a placeholder apiKey (or your client token) with `openclaw config set`, or prints the
    /// commands when openclaw is not on PATH.
    Connect {
        /// The OpenClaw state folder to set up (as OPENCLAW_STATE_DIR); default: OpenClaw's own.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// What OpenClaw sends as its API key: your client token when keyproxy has clients.
        #[arg(
            long,
            env = "KEYPROXY_CLIENT_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true
        )]
        api_key: Option<String>,
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// For every OpenClaw state folder (configured, ~/.openclaw, OPENCLAW_STATE_DIR, the
    /// gateway service's): does it point at this keyproxy, and does keyproxy have its key?
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn keyproxy_day(s: &str) -> Result<String, String> {
    keyproxy::usage::range::parse_day(s)
}
