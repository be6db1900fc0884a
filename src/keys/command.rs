//! `key_command`: a program that prints a key, the credential-helper pattern (git's credential
//! helpers, AWS `credential_process`), so keys can stay in 1Password, pass or Vault.
//!
//! Each command has a thread of its own that runs it at start, every `refresh` and when asked
//! (SIGHUP), and keeps the last good key when a run fails. A reload only reads what the thread
//! has; a command that hangs is killed at its timeout and never holds a reload.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::command_run::run;
use super::{Redactor, Secret};

/// What a profile's `key_command` asks for; two profiles with the same one share a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub refresh: Duration,
    pub timeout: Duration,
    /// Run the way OpenClaw runs an `exec` secret provider, not as a plain `key_command`.
    pub openclaw: Option<ExecProtocol>,
}

/// How OpenClaw 2026.9 runs an `exec` provider (`resolveExecRefs` in its dist): the request
/// `{"protocolVersion":1,"provider":NAME,"ids":[ID]}` on stdin, an environment of only the
/// provider's `passEnv` and `env`, in the command's folder; it answers
/// `{"protocolVersion":1,"values":{ID: "..."}}`, or, with `jsonOnly: false`, the bare value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecProtocol {
    pub provider: String,
    pub id: String,
    pub env: Vec<(String, String)>,
    pub json_only: bool,
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

/// The keys the last reload knew, for hiding them in what a command prints to stderr.
type SharedRedactor = Arc<Mutex<Arc<Redactor>>>;

/// Every command of the current keys files, each with its thread.
#[derive(Default)]
pub(crate) struct Commands {
    running: HashMap<CommandSpec, Running>,
    notify: SharedNotify,
    redactor: SharedRedactor,
}

impl Commands {
    /// From now on a finished run triggers `notify`, and a new command is not waited for.
    pub fn set_notify(&mut self, notify: Notify) {
        *self.notify.lock().unwrap_or_else(PoisonError::into_inner) = Some(notify);
    }

    /// The keys known now; a run's error hides them (and the command's own last key).
    pub fn set_redactor(&mut self, redactor: Arc<Redactor>) {
        *self.redactor.lock().unwrap_or_else(PoisonError::into_inner) = redactor;
    }

    /// What `spec` gave last. A command seen for the first time starts now; before a notifier
    /// is set (start-up, `check`) its first run is waited for, up to its timeout.
    pub fn outcome(&mut self, spec: &CommandSpec) -> Outcome {
        let waits = self
            .notify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none();
        let (notify, redactor) = (self.notify.clone(), self.redactor.clone());
        let shared = &self
            .running
            .entry(spec.clone())
            .or_insert_with(|| Running(start(spec.clone(), notify, redactor)))
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

fn start(spec: CommandSpec, notify: SharedNotify, redactor: SharedRedactor) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    let mine = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("keyproxy-key-command".into())
        .spawn(move || refresh_loop(&spec, &mine, notify, redactor));
    if let Err(e) = spawned {
        let mut slot = shared.lock();
        slot.outcome.error = Some(format!("cannot start a thread for key_command: {e}"));
        slot.outcome.runs = 1;
    }
    shared
}

fn refresh_loop(
    spec: &CommandSpec,
    shared: &Shared,
    notify: SharedNotify,
    redactor: SharedRedactor,
) {
    loop {
        let known = redactor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // The command's last key, which a revoked-key message is most likely to quote, may be
        // newer than the last reload.
        let last = shared.lock().outcome.key.clone();
        let known = known.with(last.as_ref());
        let result = run(spec, &known);
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
                    // The command line itself may hold a key (`printf sk-...`).
                    let why = known.known(&why).into_owned();
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

#[cfg(test)]
mod tests {
    use super::*;

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
            openclaw: None,
        };
        assert_eq!(spec.shown(), "op read 'op://Private/My Key/credential'");
    }
}
