//! `keyproxy service install | uninstall | status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::args::{ServiceAction, ServiceManager};
use keyproxy::config::{self, Origin};
use keyproxy::tasks::service::{self, Manager, Service};

pub fn run(origin: Origin, listen: Option<SocketAddr>, action: ServiceAction) -> ExitCode {
    let outcome = match action {
        ServiceAction::Install {
            dry_run,
            no_start,
            manager,
        } => describe(&origin, manager).and_then(|s| install(&s, dry_run, no_start)),
        ServiceAction::Uninstall { manager } => {
            describe(&origin, manager).and_then(|s| uninstall(&s))
        }
        ServiceAction::Status { manager } => {
            describe(&origin, manager).and_then(|s| status(&s, &origin, listen))
        }
    };
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("keyproxy service: {why}");
            ExitCode::FAILURE
        }
    }
}

/// The service for this binary and config, every path absolute.
fn describe(origin: &Origin, manager: Option<ServiceManager>) -> Result<Service, String> {
    let manager = match manager {
        Some(ServiceManager::Systemd) => Manager::Systemd,
        Some(ServiceManager::Launchd) => Manager::Launchd,
        None => Manager::native(),
    };
    let binary = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| format!("cannot tell where this keyproxy binary is: {e}"))?;
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or("HOME is not set")?;
    let (config, config_home) = match origin {
        Origin::File(path) => {
            let abs =
                std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
            (Some(abs), None)
        }
        // The embedded default reads $XDG_CONFIG_HOME/keyproxy/keys.toml: pin this shell's.
        Origin::Embedded { .. } => {
            let dir = config::expand_vars("$XDG_CONFIG_HOME");
            (None, Some(PathBuf::from(dir)))
        }
    };
    Ok(Service {
        manager,
        binary,
        config,
        config_home,
        home,
    })
}

fn shown(commands: &[Vec<String>]) -> String {
    commands
        .iter()
        .map(|c| format!("  {}\n", c.join(" ")))
        .collect()
}

fn install(s: &Service, dry_run: bool, no_start: bool) -> Result<String, String> {
    let path = s.unit_path();
    let unit = s.render()?;
    let mut out = String::new();
    if s.binary.components().any(|c| c.as_os_str() == "target") {
        out += &format!(
            "note: {} is a build output that `cargo clean` removes; `cargo install --locked --path .` puts keyproxy in ~/.cargo/bin\n",
            s.binary.display()
        );
    }
    if dry_run {
        return Ok(format!(
            "{out}would write {}:\n{unit}then run:\n{}",
            path.display(),
            shown(&s.start_commands())
        ));
    }
    service::write(&path, &unit).map_err(|e| format!("{}: {e}", path.display()))?;
    out += &format!("wrote {}\n", path.display());
    if no_start {
        return Ok(format!(
            "{out}to start it now and at every login, run:\n{}",
            shown(&s.start_commands())
        ));
    }
    match service::run_all(&s.start_commands()) {
        Ok(()) => Ok(format!(
            "{out}started; `keyproxy service status` checks it\n"
        )),
        Err(why) => Ok(format!(
            "{out}could not start it ({why}); with a {} session, run:\n{}",
            match s.manager {
                Manager::Systemd => "systemd user",
                Manager::Launchd => "launchd GUI",
            },
            shown(&s.start_commands())
        )),
    }
}

fn uninstall(s: &Service) -> Result<String, String> {
    let path = s.unit_path();
    if !path.exists() {
        return Ok(format!("not installed: no {}\n", path.display()));
    }
    let stopped = service::run_all(&s.stop_commands());
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(match stopped {
        Ok(()) => format!("stopped and removed {}\n", path.display()),
        Err(why) => format!(
            "removed {}; stopping it failed ({why}); if it still runs:\n{}",
            path.display(),
            shown(&s.stop_commands())
        ),
    })
}

fn status(s: &Service, origin: &Origin, listen: Option<SocketAddr>) -> Result<String, String> {
    let path = s.unit_path();
    let mut out = String::new();
    let installed = path.exists();
    out += &format!(
        "installed: {}\n",
        if installed {
            format!("yes, {}", path.display())
        } else {
            format!("no ({} is missing)", path.display())
        }
    );
    out += &format!(
        "running: {}\n",
        match s.running() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown (the service manager cannot be asked from here)",
        }
    );
    let listen = match listen {
        Some(a) => a,
        None => crate::cli::running::configured_listen("service status", origin).0,
    };
    let url = keyproxy::tasks::instance::admin_url(listen, "ready");
    let asked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(keyproxy::tasks::probe::probe(&url, Duration::from_secs(5)));
    out += &match asked {
        Ok(_) => format!("answering: yes, {url} is ready\n"),
        Err(why) => format!("answering: no, {why}\n"),
    };
    Ok(out)
}
