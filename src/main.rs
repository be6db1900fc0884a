//! The binary: parse the command line, set up logging and dispatch to `cli/`, one file per
//! command group.

mod cli;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use cli::args::{Cli, Command, LogFormat};
use keyproxy::config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    not_dumpable();
    let origin = config::discover(cli.config.as_deref());
    match cli.command {
        Some(Command::Check {
            json,
            token,
            admin_token,
            live,
        }) => cli::check::run(origin, cli.listen, admin_token.or(token), live, json),
        Some(Command::Status { json, running }) => {
            cli::running::status(&origin, cli.listen, &running, json)
        }
        Some(Command::Usage {
            json,
            local,
            since,
            until,
            by,
            running,
        }) => {
            let range = [("since", since), ("until", until), ("by", by)];
            cli::running::usage(&origin, cli.listen, &running, json, local, range)
        }
        Some(Command::Me { json, running }) => {
            cli::running::me(&origin, cli.listen, &running, json)
        }
        Some(Command::Reload { running }) => cli::running::reload(&origin, cli.listen, &running),
        Some(Command::Health { url, timeout }) => {
            cli::health::health(origin, cli.listen, url, timeout)
        }
        Some(Command::Service { action }) => cli::service::run(origin, cli.listen, action),
        Some(Command::Keys { action }) => cli::keys::run(origin, action),
        Some(Command::Openclaw { action }) => cli::openclaw::run(origin, cli.listen, action),
        Some(Command::Completions { shell }) => cli::docs::completions(shell),
        Some(Command::Man { dir }) => cli::docs::man(dir.as_deref()),
        Some(Command::Serve) => cli::serve::serve(origin, cli.listen),
        None => cli::serve::serve(origin, cli.listen),
    }
}

/// Another process of the same user could otherwise read the keys from this one's memory or
/// environment through /proc (`/proc/PID/mem`, `environ`) or ptrace; a process that is not
/// dumpable is off limits to them, and leaves no core dump. It does not stop root, nor a
/// debugger the kernel's ptrace rules still allow.
#[cfg(target_os = "linux")]
fn not_dumpable() {
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!("cannot mark the process not dumpable ({e}); other processes of this user may read its memory");
    }
}

#[cfg(not(target_os = "linux"))]
fn not_dumpable() {}

/// Logs go to stderr; see `log_buffer` for why the worker threads collect theirs.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(keyproxy::LogWriter)
        .with_ansi(ansi);
    keyproxy::write_log_lines_directly(format == LogFormat::Text && !ansi);
    match format {
        LogFormat::Text => builder.event_format(keyproxy::TextLine::default()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
