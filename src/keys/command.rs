//! `key_command`: a program that prints a key, the credential-helper pattern (git's credential
//! helpers, AWS `credential_process`), so keys can stay in 1Password, pass or Vault.
//!
//! Each command has a thread of its own that runs it at start, every `refresh` and when asked
//! (SIGHUP), and keeps the last good key when a run fails. A reload only reads what the thread
//! has; a command that hangs is killed at its timeout and never holds a reload.

use std::collections::HashMap;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::keys_file::trim_one_newline;
use super::Secret;
use crate::text::redact_quoted;

/// What a profile's `key_command` asks for; two profiles with the same one share a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub refresh: Duration,
    pub timeout: Duration,
}

impl CommandSpec {
    /// The command as a person would type it, for messages: `op read op://Private/x`.
    pub fn shown(&self) -> String {
        let words: Vec<String> = self
            .argv
            .iter()
            .map(|w| {
                if !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || c == '\'') {
                    w.clone()
                } else {
                    format!("'{}'", w.replace('\'', "'\\''"))
                }
            })
            .collect();
        words.join(" ")
    }
}

/// The last run's result: the last good key and, when the last run failed, why.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub key: Option<Secret>,
    pub error: Option<String>,
    runs: u64,
}

impl Outcome {
    /// The first run has not finished yet.
    pub fn pending(&self) -> bool {
        self.runs == 0
    }
}

#[derive(Default)]
struct Slot {
    outcome: Outcome,
    run_now: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops its command's thread when the command is no longer in any keys file.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.changed.notify_all();
    }
}

/// Called when a run has finished, so the reloader builds a store with its result.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

type SharedNotify = Arc<Mutex<Option<Notify>>>;

/// Every command of the current keys files, each with its thread.
#[derive(Default)]
pub(crate) struct Commands {
    running: HashMap<CommandSpec, Running>,
    notify: SharedNotify,
}

impl Commands {
    /// From now on a finished run triggers `notify`, and a new command is not waited for.
    pub fn set_notify(&mut self, notify: Notify) {
        *self.notify.lock().unwrap_or_else(PoisonError::into_inner) = Some(notify);
    }

    /// What `spec` gave last. A command seen for the first time starts now; before a notifier
    /// is set (start-up, `check`) its first run is waited for, up to its timeout.
    pub fn outcome(&mut self, spec: &CommandSpec) -> Outcome {
        let waits = self
            .notify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none();
        let notify = self.notify.clone();
        let shared = &self
            .running
            .entry(spec.clone())
            .or_insert_with(|| Running(start(spec.clone(), notify)))
            .0;
        let mut slot = shared.lock();
        if waits {
            let wait = spec.timeout + Duration::from_secs(1);
            slot = shared
                .changed
                .wait_timeout_while(slot, wait, |s| s.outcome.pending())
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let mut outcome = slot.outcome.clone();
        if outcome.pending() {
            outcome.error = Some(format!("key_command {} has not finished yet", spec.shown()));
        }
        outcome
    }

    /// Stops the threads of commands that `keep` no longer lists.
    pub fn retain(&mut self, keep: &[CommandSpec]) {
        self.running.retain(|spec, _| keep.contains(spec));
    }

    /// Runs every command again now (SIGHUP).
    pub fn run_all_now(&self) {
        for Running(shared) in self.running.values() {
            shared.lock().run_now = true;
            shared.changed.notify_all();
        }
    }
}

fn start(spec: CommandSpec, notify: SharedNotify) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    let mine = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("keyproxy-key-command".into())
        .spawn(move || refresh_loop(&spec, &mine, notify));
    if let Err(e) = spawned {
        let mut slot = shared.lock();
        slot.outcome.error = Some(format!("cannot start a thread for key_command: {e}"));
        slot.outcome.runs = 1;
    }
    shared
}

fn refresh_loop(spec: &CommandSpec, shared: &Shared, notify: SharedNotify) {
    loop {
        let result = run(spec);
        {
            let mut slot = shared.lock();
            if slot.stop {
                return;
            }
            match result {
                Ok(key) => {
                    slot.outcome.key = Some(key);
                    slot.outcome.error = None;
                }
                Err(why) => {
                    tracing::warn!("{why}");
                    slot.outcome.error = Some(why);
                }
            }
            slot.outcome.runs += 1;
            shared.changed.notify_all();
        }
        // Before a notifier is set the result is picked up by whoever waits for it.
        let hook = notify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook();
        }
        let slot = shared.lock();
        let mut slot = shared
            .changed
            .wait_timeout_while(slot, spec.refresh, |s| !s.run_now && !s.stop)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if slot.stop {
            return;
        }
        slot.run_now = false;
    }
}

/// Most a key (or an error message) can take; a command printing more is not printing a key.
const OUTPUT_LIMIT: u64 = 64 * 1024;

/// Runs the command once, without a shell, in a process group of its own so that a timeout
/// kills whatever it started too.
pub(crate) fn run(spec: &CommandSpec) -> Result<Secret, String> {
    let shown = spec.shown();
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| "key_command is empty".to_owned())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("key_command {shown}: cannot run {program}: {e}"))?;
    let pid = child.id();
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::Builder::new()
        .name("keyproxy-key-command-wait".into())
        .spawn(move || {
            let err = std::thread::spawn(move || read_limited(stderr.as_mut()));
            let out = read_limited(stdout.as_mut());
            let err = err.join().unwrap_or_default();
            let _ = tx.send((child.wait(), out, err));
        });
    if let Err(e) = waiter {
        kill_group(pid);
        return Err(format!("key_command {shown}: cannot wait for it: {e}"));
    }
    let (status, out, err) = match rx.recv_timeout(spec.timeout) {
        Ok(done) => done,
        Err(_) => {
            kill_group(pid);
            return Err(format!(
                "key_command {shown} did not finish within {}; killed it",
                humantime::format_duration(spec.timeout)
            ));
        }
    };
    let status = status.map_err(|e| format!("key_command {shown}: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let stderr = quoted_stderr(&err);
    if !status.success() {
        let code = match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".to_owned(),
        };
        return Err(format!("key_command {shown} {code}{stderr}"));
    }
    let key = trim_one_newline(&text);
    if key.is_empty() {
        return Err(format!("key_command {shown} printed nothing{stderr}"));
    }
    Secret::new(key).map_err(|why| format!("key_command {shown} printed a key that {why}"))
}

fn read_limited(stream: Option<&mut impl std::io::Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(stream) = stream {
        let _ = stream.take(OUTPUT_LIMIT).read_to_end(&mut buf);
    }
    buf
}

/// The first line of stderr, with quoted text and anything that looks like a key hidden: a
/// tool may echo what it printed, or the key it found, in its error.
fn quoted_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return String::new();
    };
    let line = redact_quoted(line);
    let shown: Vec<&str> = line
        .split(' ')
        .map(|word| if looks_like_a_key(word) { "…" } else { word })
        .collect();
    let line: String = shown.join(" ").chars().take(200).collect();
    format!(": {line}")
}

/// A run of 20 or more characters of the kinds keys are made of (and no `/` or `.`, so paths
/// and URLs stay readable).
fn looks_like_a_key(word: &str) -> bool {
    word.len() >= 20
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'='))
}

#[cfg(unix)]
fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_keeps_words_and_paths_but_not_keys() {
        assert_eq!(
            quoted_stderr(b"\n[ERROR] item op://Private/OpenRouter not found for sk-or-v1-0123456789abcdef0123\nmore"),
            ": [ERROR] item op://Private/OpenRouter not found for …"
        );
        assert_eq!(quoted_stderr(b"bad \"secret\""), ": bad \"…\"");
        assert_eq!(quoted_stderr(b""), "");
    }

    #[test]
    fn commands_are_shown_as_typed() {
        let spec = CommandSpec {
            argv: vec![
                "op".into(),
                "read".into(),
                "op://Private/My Key/credential".into(),
            ],
            refresh: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(spec.shown(), "op read 'op://Private/My Key/credential'");
    }
}
