//! `keyproxy service`: keyproxy as a user service (a systemd user unit on Linux, a launchd agent
//! on macOS) whose command line holds absolute paths to the binary and the config, so the
//! service never depends on the environment of the shell that installed it — the very failure
//! keyproxy exists to remove, one level down.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which service manager to write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    /// The one this system runs.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }
}

pub const LABEL: &str = "dev.keyproxy";

/// What the service runs: the binary, its config (None: the embedded default) and the folder
/// the embedded default reads keys from, pinned since the service's environment may lack it.
#[derive(Debug, Clone)]
pub struct Service {
    pub manager: Manager,
    pub binary: PathBuf,
    pub config: Option<PathBuf>,
    pub config_home: Option<PathBuf>,
    pub home: PathBuf,
}

impl Service {
    /// Where the unit or agent file goes.
    pub fn unit_path(&self) -> PathBuf {
        match self.manager {
            Manager::Systemd => {
                let base = std::env::var_os("XDG_CONFIG_HOME")
                    .filter(|v| !v.is_empty())
                    .map_or_else(|| self.home.join(".config"), PathBuf::from);
                base.join("systemd/user/keyproxy.service")
            }
            Manager::Launchd => self
                .home
                .join("Library/LaunchAgents")
                .join(format!("{LABEL}.plist")),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![self.binary.display().to_string()];
        if let Some(config) = &self.config {
            args.push("--config".into());
            args.push(config.display().to_string());
        }
        args.push("serve".into());
        args
    }

    /// The unit (systemd) or property list (launchd); refused when a path it would hold cannot
    /// be written there as it is.
    pub fn render(&self) -> Result<String, String> {
        let paths = [
            Some(&self.binary),
            self.config.as_ref(),
            self.config_home.as_ref(),
        ];
        for path in paths.into_iter().flatten().chain([&self.home]) {
            writable(path)?;
        }
        let program = self.binary.display().to_string();
        if self.manager == Manager::Systemd && program.contains(['"', '\'', '\\']) {
            return Err(format!(
                "{program:?}: systemd runs no program whose path holds a quote or a backslash; move the keyproxy binary"
            ));
        }
        Ok(match self.manager {
            Manager::Systemd => self.systemd_unit(),
            Manager::Launchd => self.launchd_plist(),
        })
    }

    fn systemd_unit(&self) -> String {
        // The program itself is not expanded; its arguments are.
        let exec: Vec<String> = self
            .args()
            .iter()
            .enumerate()
            .map(|(i, a)| match i {
                0 => systemd_word(a),
                _ => systemd_exec_word(a),
            })
            .collect();
        let env = self
            .config_home
            .as_ref()
            .map(|d| {
                format!(
                    "Environment={}\n",
                    systemd_word(&format!("XDG_CONFIG_HOME={}", d.display()))
                )
            })
            .unwrap_or_default();
        format!(
            "# Written by `keyproxy service install`; `keyproxy service uninstall` removes it.\n\
             [Unit]\n\
             Description=keyproxy: holds LLM provider keys so agents do not\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             ExecStart={}\n\
             ExecReload=/bin/kill -HUP $MAINPID\n\
             {env}\
             Restart=on-failure\n\
             RestartSec=2\n\
             \n\
             [Install]\n\
             WantedBy=default.target\n",
            exec.join(" ")
        )
    }

    fn launchd_plist(&self) -> String {
        let args: String = self
            .args()
            .iter()
            .map(|a| format!("    <string>{}</string>\n", xml_escape(a)))
            .collect();
        let env = self
            .config_home
            .as_ref()
            .map(|d| {
                format!(
                    "  <key>EnvironmentVariables</key>\n  <dict>\n    <key>XDG_CONFIG_HOME</key>\n    <string>{}</string>\n  </dict>\n",
                    xml_escape(&d.display().to_string())
                )
            })
            .unwrap_or_default();
        let log = xml_escape(
            &self
                .home
                .join("Library/Logs/keyproxy.log")
                .display()
                .to_string(),
        );
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\">\n<dict>\n\
             \x20 <key>Label</key>\n  <string>{LABEL}</string>\n\
             \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
             {env}\
             \x20 <key>RunAtLoad</key>\n  <true/>\n\
             \x20 <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n\
             \x20 <key>StandardErrorPath</key>\n  <string>{log}</string>\n\
             </dict>\n</plist>\n"
        )
    }

    /// The commands that start the service once its file is written.
    pub fn start_commands(&self) -> Vec<Vec<String>> {
        let v = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        match self.manager {
            Manager::Systemd => vec![
                v(&["systemctl", "--user", "daemon-reload"]),
                v(&["systemctl", "--user", "enable", "--now", "keyproxy.service"]),
            ],
            Manager::Launchd => vec![v(&[
                "launchctl",
                "bootstrap",
                &format!("gui/{}", uid()),
                &self.unit_path().display().to_string(),
            ])],
        }
    }

    /// The commands that stop it before its file is removed.
    pub fn stop_commands(&self) -> Vec<Vec<String>> {
        let v = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        match self.manager {
            Manager::Systemd => vec![
                v(&[
                    "systemctl",
                    "--user",
                    "disable",
                    "--now",
                    "keyproxy.service",
                ]),
                v(&["systemctl", "--user", "daemon-reload"]),
            ],
            Manager::Launchd => vec![v(&[
                "launchctl",
                "bootout",
                &format!("gui/{}/{LABEL}", uid()),
            ])],
        }
    }

    /// Whether the service manager says it runs: Some(answer), or None when it cannot be asked.
    pub fn running(&self) -> Option<bool> {
        let out = match self.manager {
            Manager::Systemd => Command::new("systemctl")
                .args(["--user", "is-active", "keyproxy.service"])
                .output(),
            Manager::Launchd => Command::new("launchctl")
                .args(["print", &format!("gui/{}/{LABEL}", uid())])
                .output(),
        }
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        match self.manager {
            Manager::Systemd if text.trim() == "active" => Some(true),
            Manager::Systemd if ["inactive", "failed", "activating"].contains(&text.trim()) => {
                Some(false)
            }
            Manager::Systemd => None,
            Manager::Launchd => Some(out.status.success() && text.contains("state = running")),
        }
    }
}

/// Runs `commands` in order; Err with the first that failed and why.
pub fn run_all(commands: &[Vec<String>]) -> Result<(), String> {
    for words in commands {
        let Some((program, args)) = words.split_first() else {
            continue;
        };
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", words.join(" ")))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!("{}: {}", words.join(" "), why.trim()));
        }
    }
    Ok(())
}

/// Writes the service file (its folder created as needed).
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// A path goes into a unit or plist only as UTF-8 without control characters: systemd would
/// read a newline as the start of another directive (an `ExecStartPre=` of the path's
/// choosing), and XML 1.0 cannot hold most control characters at all.
fn writable(path: &Path) -> Result<(), String> {
    let Some(text) = path.to_str() else {
        return Err(format!(
            "{}: the path is not UTF-8, which a service file cannot hold; move it",
            path.display()
        ));
    };
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "{:?}: the path holds a control character ({c:?}), which a service file cannot hold; rename or move it",
            text
        )),
        None => Ok(()),
    }
}

/// An argument of `ExecStart=`: systemd expands `$NAME` in arguments (not in the program's
/// path), so `$` is doubled (systemd.service, "Command lines"), besides what every word needs.
fn systemd_exec_word(word: &str) -> String {
    systemd_word(&word.replace('$', "$$"))
}

/// A word as systemd splits and unescapes a setting (systemd.syntax, "Quoting"): `%` doubled
/// (specifiers, systemd.unit), and in double quotes, with `\` and `"` escaped, when it holds
/// whitespace, a quote or a backslash. `Environment=` takes words like this and expands no `$`
/// (systemd.exec), so a `$` there stays single.
fn systemd_word(word: &str) -> String {
    let escaped = word.replace('%', "%%");
    if escaped.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';')) {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

/// Text content of a plist element (XML 1.0, section 2.4).
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}
