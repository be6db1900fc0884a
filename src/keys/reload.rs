//! Reload: read the config and every key source again, build a complete new snapshot and swap it
//! in. Requests in flight keep the snapshot they loaded; a source that fails keeps its last good
//! keys, and the failure is logged with file and line and shown in `status`.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::sources::Loader;
use crate::config::{self, Origin};
use crate::error::ConfigError;
use crate::routes::Routes;
use crate::state::{ReloadLog, Snapshot, State};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: {source}", path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded default".into()))]
    Upstream {
        path: Option<std::path::PathBuf>,
        source: crate::upstream::UpstreamError,
    },
}

pub struct Reloader {
    state: Arc<State>,
    loader: Loader,
}

impl Reloader {
    /// The first load. A bad config is fatal here; a missing or broken key source is not.
    pub fn start(origin: Origin) -> Result<Self, StartError> {
        let config = config::load(&origin)?;
        let routes = Routes::build(&config).map_err(|source| StartError::Upstream {
            path: config.path.clone(),
            source,
        })?;
        let mut loader = Loader::default();
        let built = loader.build(&config, routes.formats());
        let now = SystemTime::now();
        let mut log = ReloadLog::default();
        if built.errors.is_empty() {
            log.last_ok_at = Some(now);
        } else {
            for e in &built.errors {
                tracing::error!("key source failed at start-up: {e}");
            }
            log.last_error = Some((now, built.errors.join("; ")));
        }
        let snapshot = Snapshot {
            config: Arc::new(config),
            routes: Arc::new(routes),
            keys: built.store,
        };
        Ok(Self {
            state: Arc::new(State::new(origin, snapshot, log)),
            loader,
        })
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Reads everything again and swaps in the result.
    pub fn reload(&mut self) {
        let current = self.state.load();
        let mut errors = Vec::new();
        let (config, routes) = match &self.state.origin {
            Origin::Embedded { .. } => (current.config.clone(), current.routes.clone()),
            Origin::File(path) => match config::load_file(path) {
                Ok(c) if c == *current.config => (current.config.clone(), current.routes.clone()),
                Ok(c) => match Routes::build(&c) {
                    Ok(r) => {
                        if c.listen != current.config.listen {
                            tracing::warn!(
                                old = %current.config.listen, new = %c.listen,
                                "the listen address changed; it takes effect at the next restart"
                            );
                        }
                        (Arc::new(c), Arc::new(r))
                    }
                    Err(e) => {
                        errors.push(format!("{}: {e}", path.display()));
                        (current.config.clone(), current.routes.clone())
                    }
                },
                Err(e) => {
                    errors.push(e.to_string());
                    (current.config.clone(), current.routes.clone())
                }
            },
        };
        let built = self.loader.build(&config, routes.formats());
        errors.extend(built.errors);
        built.store.log_changes_since(&current.keys);
        self.state.store(Snapshot {
            config,
            routes,
            keys: built.store,
        });
        let now = SystemTime::now();
        self.state.record(|log| {
            log.count += 1;
            if errors.is_empty() {
                log.last_ok_at = Some(now);
                log.last_error = None;
            } else {
                log.last_error = Some((now, errors.join("; ")));
            }
        });
        if errors.is_empty() {
            tracing::info!(reload = self.state.log().count, "reloaded config and keys");
        } else {
            for e in &errors {
                tracing::error!("reload kept the last good keys: {e}");
            }
        }
    }

    /// Runs reloads as they are asked for, until every sender is gone.
    pub async fn run(mut self, mut requests: mpsc::Receiver<ReloadRequest>) {
        while let Some(req) = requests.recv().await {
            // Requests that queued up behind this one are answered by the same reload.
            let mut done = vec![req];
            while let Ok(more) = requests.try_recv() {
                done.push(more);
            }
            self.reload();
            for req in done {
                if let Some(tx) = req.done {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// A request for a reload; `done` is told when a reload that started after it has finished.
pub struct ReloadRequest {
    pub reason: &'static str,
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}
