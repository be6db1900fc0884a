//! The pooled clients that reach upstreams: hyper-util's legacy client over rustls (ring), with
//! the bundled web PKI roots plus an optional per-route CA file, HTTP/2 by ALPN. One client per
//! worker thread, so that an upstream connection is driven by the thread whose requests use it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::upload::UpstreamBody;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// One pooled client per worker, sharing the TLS set-up.
#[derive(Clone)]
pub struct Upstreams(Arc<[UpstreamClient]>);

impl Upstreams {
    /// The client of worker `worker`; the modulo keeps a worker count changed by a reload safe.
    pub fn for_worker(&self, worker: usize) -> &UpstreamClient {
        &self.0[worker % self.0.len()]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Builds the clients for one trust set. Routes sharing a `ca_file` (most share none) share them.
pub fn clients(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
    workers: usize,
) -> Result<Upstreams, UpstreamError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let ca_error = |message: String| UpstreamError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);

    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90));
    let clients: Arc<[UpstreamClient]> = (0..workers.max(1))
        .map(|_| builder.build(https.clone()))
        .collect();
    Ok(Upstreams(clients))
}
