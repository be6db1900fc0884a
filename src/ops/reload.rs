//! Reload: read the config and every key source again, build a complete new snapshot and swap it
//! in. Requests in flight keep the snapshot they loaded; a source that fails keeps its last good
//! keys, and the failure is logged with file and line and shown in `status`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::watch::Watcher;
use crate::config::{self, Config, ConfigError, Origin};
use crate::keys::command::Notify;
use crate::keys::files::{FileSet, ReadProbe};
use crate::keys::sources::Loader;
use crate::metrics::Metrics;
use crate::proxy::{ReloadLog, Routes, Snapshot, State, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: {source}", path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded default".into()))]
    Upstream {
        path: Option<std::path::PathBuf>,
        source: UpstreamError,
    },
}

pub struct Reloader {
    state: Arc<State>,
    loader: Loader,
    /// The files the current snapshot was built from, as they were read.
    files: FileSet,
    /// Where the server listens: a reload may not expose it (see [`Config::exposes`]).
    listening: Option<std::net::SocketAddr>,
}

/// After an event, wait until the folder has been quiet this long before reading, so that a
/// burst (an editor's write, rename and chmod; a Kubernetes swap's renames) is read once, and a
/// file written in several calls is read whole. Writers of a small file finish well inside it;
/// it is most of the reload latency that `benches/reload_latency.rs` measures.
const SETTLE: Duration = Duration::from_millis(10);
/// ... but never longer than this, so a file rewritten continuously is still read.
const SETTLE_MAX: Duration = Duration::from_millis(500);

impl Reloader {
    /// The first load. A bad config is fatal here; a missing or broken key source is not.
    pub fn start(origin: Origin) -> Result<Self, StartError> {
        let probe = Arc::new(ReadProbe::default());
        let mut files = FileSet::probed(probe.clone());
        let config = read_config(&origin, &mut files)?;
        let metrics = Arc::new(Metrics::new());
        let routes = Routes::build(&config, &metrics).map_err(|source| StartError::Upstream {
            path: config.path.clone(),
            source,
        })?;
        let mut loader = Loader::default();
        let built = loader.build(&config, routes.formats(), &mut files);
        let now = SystemTime::now();
        let mut log = ReloadLog {
            last_trigger: "start",
            ..ReloadLog::default()
        };
        if built.errors.is_empty() {
            log.last_ok_at = Some(now);
        } else {
            for e in &built.errors {
                tracing::error!("key source failed at start-up: {e}");
            }
            log.last_error = Some((now, built.errors.join("; ")));
        }
        let snapshot = Snapshot::new(Arc::new(config), Arc::new(routes), built.store, &metrics);
        Ok(Self {
            state: Arc::new(State::new(origin, snapshot, log, metrics, probe)),
            loader,
            files,
            listening: None,
        })
    }

    pub fn listening_on(&mut self, addr: std::net::SocketAddr) {
        self.listening = Some(addr);
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Reads everything again and swaps in the result; `trigger` says why, for logs and status.
    pub fn reload(&mut self, trigger: &'static str) {
        let current = self.state.load();
        let mut errors = Vec::new();
        let mut files = FileSet::probed(self.state.reading.clone());
        let read = read_config(&self.state.origin, &mut files).and_then(|c| match self.listening {
            // The rule start-up enforces holds after every reload, or deleting [[clients]]
            // would open a network listener to everyone.
            Some(addr) if c.exposes(addr) => Err(ConfigError::Validation {
                path: c.path.clone().unwrap_or_default(),
                message: format!(
                    "refusing this config: keyproxy listens on {addr}, not a loopback address, and it has no [[clients]] nor allow_unauthenticated = true; keeping the last good config"
                ),
            }),
            _ => Ok(c),
        });
        let (config, routes) = match read {
            Ok(c) if c == *current.config => (current.config.clone(), current.routes.clone()),
            Ok(c) => match Routes::build(&c, &self.state.metrics) {
                Ok(r) => {
                    if c.listen != current.config.listen {
                        tracing::warn!(
                            old = %current.config.listen, new = %c.listen,
                            "the listen address changed; it takes effect at the next restart"
                        );
                    }
                    // The store's connection, watcher and usage outlet are set up once, at
                    // start: the running ones keep the [shared] they started with.
                    if c.shared != current.config.shared {
                        let store = |s: &Option<crate::config::shared::SharedConfig>| {
                            s.as_ref().map_or("none".to_owned(), |s| s.store.clone())
                        };
                        tracing::warn!(
                            old = %store(&current.config.shared), new = %store(&c.shared),
                            "[shared] changed; it takes effect at the next restart"
                        );
                    }
                    (Arc::new(c), Arc::new(r))
                }
                Err(e) => {
                    let at = c.path.as_deref().map(|p| p.display().to_string());
                    errors.push(format!("{}: {e}", at.unwrap_or_default()));
                    (current.config.clone(), current.routes.clone())
                }
            },
            Err(e) => {
                errors.push(e.to_string());
                (current.config.clone(), current.routes.clone())
            }
        };
        let asked = trigger == "SIGHUP" || trigger == ASKED;
        if asked {
            self.loader.run_commands_now();
        }
        let built = self.loader.build(&config, routes.formats(), &mut files);
        errors.extend(built.errors);
        let mut keys = built.store;
        // SIGHUP wakes every key; a route whose upstream changed wakes the keys it may inject.
        let moved: Vec<&crate::config::RouteConfig> = config
            .routes
            .iter()
            .filter(|r| {
                current
                    .config
                    .routes
                    .iter()
                    .any(|o| o.prefix == r.prefix && o.upstream != r.upstream)
            })
            .collect();
        keys.adopt_health(&current.keys, |profile| {
            asked || moved.iter().any(|r| r.allows(profile))
        });
        // OpenClaw writes its database on every turn; a reload that changed nothing is routine.
        let recovered = self.state.log().last_error.is_some();
        let changed = keys.log_changes_since(&current.keys)
            || !Arc::ptr_eq(&config, &current.config)
            || recovered;
        self.state.store(
            Snapshot::new(config, routes, keys, &self.state.metrics)
                .with_limits_of(&current, self.state.usage.get()),
        );
        self.files = files;
        let now = SystemTime::now();
        self.state.metrics.reloads.inc();
        if !errors.is_empty() {
            self.state.metrics.reload_failures.inc();
        }
        self.state.record(|log| {
            log.count += 1;
            log.last_trigger = trigger;
            if errors.is_empty() {
                log.last_ok_at = Some(now);
                log.last_error = None;
            } else {
                log.last_error = Some((now, errors.join("; ")));
            }
        });
        if errors.is_empty() {
            let count = self.state.log().count;
            if changed || asked {
                tracing::info!(reload = count, trigger, "reloaded config and keys");
                for warning in self.state.load().profiles_without_provider() {
                    tracing::warn!("{warning}");
                }
            } else {
                tracing::debug!(
                    reload = count,
                    trigger,
                    "reloaded config and keys; nothing changed"
                );
            }
        } else {
            for e in &errors {
                tracing::error!(trigger, "reload kept the last good keys: {e}");
            }
        }
    }

    /// Runs reloads on a thread of its own, so that no file read, however stuck (a hung NFS or
    /// FUSE mount, a FIFO), can stop accepting, health answers or SIGTERM. A reloader that
    /// panics is restarted from the current snapshot, and the panic shows in `status`.
    pub fn spawn(
        mut self,
        sender: &mpsc::Sender<ReloadRequest>,
        requests: mpsc::Receiver<ReloadRequest>,
    ) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Weak: the reloader ends when keyproxy drops its senders, key commands or not.
        let sender = sender.downgrade();
        let command_ran: Notify = Arc::new(move || {
            if let Some(tx) = sender.upgrade() {
                let _ = tx.try_send(ReloadRequest {
                    reason: "key_command",
                    done: None,
                });
            }
        });
        self.loader.on_command_run(command_ran.clone());
        let mut watcher = self.watch();
        let mut requests = requests;
        std::thread::Builder::new()
            .name("keyproxy-reload".into())
            .spawn(move || loop {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(self.run(&mut watcher, &mut requests))
                }));
                if ran.is_ok() {
                    return; // every sender is gone: keyproxy is stopping
                }
                let state = self.state.clone();
                state.record(|log| {
                    log.last_error = Some((
                        SystemTime::now(),
                        "the reloader stopped on a panic and was restarted; see the log".into(),
                    ));
                });
                tracing::error!("the reloader panicked; restarting it in a second");
                std::thread::sleep(Duration::from_secs(1));
                self = Self {
                    files: FileSet::probed(state.reading.clone()),
                    loader: Loader::default(),
                    listening: self.listening,
                    state,
                };
                self.loader.on_command_run(command_ran.clone());
                self.reload("restart");
                watcher = self.watch();
            })?;
        Ok(())
    }

    /// A watcher armed on the folders of every file the snapshot was built from. A file that
    /// changed between the first load and the arming is read again here, so no change is missed.
    pub fn watch(&mut self) -> Watcher {
        let mut watcher = Watcher::new();
        let _ = watcher.arm(self.files.paths());
        self.reload_if_changed("file change");
        watcher
    }

    /// Reloads when a file the snapshot was built from holds something else now.
    fn reload_if_changed(&mut self, trigger: &'static str) {
        if let Some(path) = self.files.changed() {
            tracing::debug!(file = %path.display(), trigger, "changed");
            self.reload(trigger);
        }
    }

    /// Runs reloads until every sender of `requests` is gone: each request (SIGHUP, a test)
    /// reloads at once; a file event or a poll tick reloads when a file's contents changed.
    /// `watcher` comes from [`Reloader::watch`], called before anyone may change a file.
    pub async fn run(
        &mut self,
        watcher: &mut Watcher,
        requests: &mut mpsc::Receiver<ReloadRequest>,
    ) {
        let mut every = self.state.load().config.poll_interval;
        let mut poll = poll_timer(every);
        loop {
            tokio::select! {
                req = requests.recv() => {
                    let Some(req) = req else { return };
                    // Requests that queued up behind this one are answered by the same reload.
                    let mut done = vec![req];
                    while let Ok(more) = requests.try_recv() {
                        done.push(more);
                    }
                    self.reload(done[0].reason);
                    for req in done {
                        if let Some(tx) = req.done {
                            let _ = tx.send(());
                        }
                    }
                }
                () = watcher.changed() => {
                    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
                    while tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + SETTLE), watcher.changed()).await.is_ok() {}
                    self.reload_if_changed("file change");
                }
                _ = poll.tick() => self.reload_if_changed("poll"),
            }
            // The set of files may have changed, and a watched folder may have been replaced;
            // a file written into a folder before its watch was armed sent no event.
            let mut rounds = 0;
            while watcher.arm(self.files.paths()) && rounds < 8 {
                self.reload_if_changed("file change");
                rounds += 1;
            }
            let now = self.state.load().config.poll_interval;
            if now != every {
                every = now;
                poll = poll_timer(every);
            }
        }
    }
}

fn poll_timer(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Reads the config through `files`, so that editing it is noticed like editing a keys file.
fn read_config(origin: &Origin, files: &mut FileSet) -> Result<Config, ConfigError> {
    match origin {
        Origin::Embedded { .. } => Ok(Config::embedded()),
        Origin::File(path) => {
            let bytes = files.read(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes).map_err(|_| ConfigError::Validation {
                path: path.clone(),
                message: "not UTF-8 text".into(),
            })?;
            config::parse(&text, path)
        }
    }
}

/// The trigger of a reload asked for with `keyproxy reload`; it does what SIGHUP does.
pub const ASKED: &str = "keyproxy reload";

/// A request for a reload; `done` is told when a reload that started after it has finished.
pub struct ReloadRequest {
    pub reason: &'static str,
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}
