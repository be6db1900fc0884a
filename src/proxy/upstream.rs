//! The clients that reach upstreams over rustls (ring), with the bundled web PKI roots plus an
//! optional per-route CA file. A TLS upstream that offers HTTP/2 by ALPN gets the shared,
//! stream-limit-aware connections of [`H2Origin`]; HTTP/1.1 goes through [`H1Pool`], idle
//! connections per worker thread, so that a connection is driven by the thread whose requests
//! use it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use http::{Request, Response};
use hyper::body::Incoming;

use super::h1::H1Pool;
use super::h2::{H2Failure, H2Origin, Lease};
use super::upload::{ClientFault, UpstreamBody};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connectors of one trust set: TLS offering HTTP/2, and plain TCP or TLS for HTTP/1.1.
#[derive(Clone)]
pub struct Upstreams {
    workers: usize,
    tls: HttpsConnector<HttpConnector>,
    /// Plain TCP or TLS offering HTTP/1.1 only by ALPN: a WebSocket handshake needs HTTP/1.1.
    tls_http1: HttpsConnector<HttpConnector>,
}

/// Why no response came: `connect` when no connection could be made (DNS, TCP, TLS).
pub struct SendError {
    pub connect: bool,
    pub error: BoxError,
}

/// One upstream origin (scheme, host, port) of a route, with its connections.
pub struct Origin {
    http1: Arc<H1Pool>,
    /// For the connections a WebSocket takes over, which no pool may share.
    pub(super) tls_http1: HttpsConnector<HttpConnector>,
    /// Per worker, as `http1` is.
    h2: Option<Box<[H2Origin]>>,
}

impl Origin {
    pub fn new(upstreams: &Upstreams, tls: bool) -> Self {
        Self {
            http1: Arc::new(H1Pool::new(upstreams.tls_http1.clone())),
            tls_http1: upstreams.tls_http1.clone(),
            // One set of HTTP/2 connections per worker, driven by that worker's thread: a shared
            // set (one connection for all) measured 15-20% fewer requests per second on the
            // TLS benchmark, its streams crossing threads on every request and event.
            h2: tls.then(|| {
                (0..upstreams.workers)
                    .map(|_| H2Origin::new(upstreams.tls.clone()))
                    .collect()
            }),
        }
    }

    /// Sends `req`: over HTTP/2 unless the upstream is known to speak HTTP/1.1 only. The lease
    /// holds the stream's place on its connection until the response body is done with;
    /// `progress` is told how far the request got, for the deadline's sake.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        progress: &ClientFault,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let worker = crate::rt::current_worker();
        let h2 = self.h2.as_ref().map(|h2| &h2[worker % h2.len()]);
        let req = match h2 {
            Some(h2) if !h2.speaks_http1() => match h2.send(req, progress).await {
                Ok(answer) => return Ok(answer),
                Err(H2Failure::SpeaksHttp1(req)) => {
                    let mut req = *req;
                    *req.version_mut() = http::Version::HTTP_11;
                    req
                }
                Err(H2Failure::Connect(error)) => {
                    return Err(SendError {
                        connect: true,
                        error,
                    })
                }
                Err(H2Failure::Failed(error)) => {
                    return Err(SendError {
                        connect: false,
                        error,
                    })
                }
            },
            _ => req,
        };
        progress.handed();
        let (resp, parked) = self.http1.send(req, progress).await?;
        Ok((resp, Lease::http1(parked)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The system's trust store (`/etc/ssl/certs`, `SSL_CERT_FILE`/`SSL_CERT_DIR`, the macOS
/// keychain), so a corporate TLS-inspecting proxy's CA that IT installed is trusted without a
/// `ca_file`. A store that cannot be read is a warning: the bundled roots still apply.
fn add_system_roots(roots: &mut RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("system CA certificates: {e}; using the bundled roots and ca_file only for what it holds");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(added, ignored, "system CA certificates read");
    }
}

/// Builds the clients for one trust set. Routes sharing a `ca_file` (most share none) share them.
pub fn clients(
    ca_file: Option<&Path>,
    system_roots: bool,
    connect_timeout: Duration,
    workers: usize,
) -> Result<Upstreams, UpstreamError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if system_roots {
        add_system_roots(&mut roots);
    }
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
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http.clone());
    let h2_or_http1 = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_all_versions()
        .wrap_connector(http);

    Ok(Upstreams {
        workers: workers.max(1),
        tls: h2_or_http1,
        tls_http1: https,
    })
}
