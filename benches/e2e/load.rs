//! The load generator: keep-alive HTTP/1.1 connections sending requests back to back, straight
//! to the mock (over TLS when the mock is TLS) or through a proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::mock::{micros, stamp_of};

pub const CHAT_REQUEST: &str = r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about reverse proxies."}],"temperature":0.7}"#;

/// Where the load goes: a plain address, or the TLS mock itself.
#[derive(Clone)]
pub enum Target {
    Plain(SocketAddr),
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

impl Target {
    pub fn tls(addr: SocketAddr, ca: &Path) -> Self {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self::Tls(addr, Arc::new(config))
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::Plain(a) | Self::Tls(a, _) => *a,
        }
    }
}

#[derive(Clone, Copy)]
pub enum Scenario {
    Chat,
    Stream,
    Paced,
    Hold,
}

impl Scenario {
    pub fn request(self, host: SocketAddr) -> Request<Full<Bytes>> {
        let path = match self {
            Self::Chat => "/api/v1/chat/completions",
            Self::Stream => "/api/v1/stream",
            Self::Paced => "/api/v1/paced",
            Self::Hold => "/api/v1/hold",
        };
        Request::post(path)
            .header("host", host.to_string())
            .header("content-type", "application/json")
            .header(
                "authorization",
                concat!("Bearer ", "kp-bench-client-token-0001"),
            )
            .header("user-agent", "OpenAI/Python 1.54.0")
            .body(Full::new(Bytes::from_static(CHAT_REQUEST.as_bytes())))
            .unwrap()
    }
}

#[derive(Default)]
pub struct Run {
    pub requests: usize,
    pub errors: usize,
    pub secs: f64,
    /// Microseconds per request (whole stream for streams), sorted.
    pub latencies: Vec<u32>,
    /// For paced streams: microseconds from the upstream sending an event to its arrival, sorted.
    pub delays: Vec<u32>,
}

pub fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    f64::from(v[((v.len() as f64 * p) as usize).min(v.len() - 1)])
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    pub fn pct(&self, p: f64) -> f64 {
        pct(&self.latencies, p)
    }
}

pub async fn connect(target: &Target) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(target.addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    match target {
        Target::Plain(_) => {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            send
        }
        Target::Tls(_, config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, stream)
                .await
                .unwrap();
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            send
        }
    }
}

/// `conns` keep-alive connections sending requests back to back for `secs`, after a warm-up.
pub async fn load(target: &Target, scenario: Scenario, conns: usize, secs: f64) -> Run {
    let warm = Instant::now() + Duration::from_millis(500);
    let end = warm + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let host = target.addr();
            let mut send = connect(&target).await;
            let (mut lat, mut delays, mut errors) = (Vec::new(), Vec::new(), 0usize);
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                if send.ready().await.is_err() {
                    send = connect(&target).await;
                    errors += 1;
                    continue;
                }
                let mut stamps = Vec::new();
                let ok = match send.send_request(scenario.request(host)).await {
                    Ok(resp) if resp.status() == 200 => {
                        let mut body = resp.into_body();
                        let mut ok = true;
                        while let Some(frame) = body.frame().await {
                            match frame {
                                Ok(f) => {
                                    if let Some(t) = f.data_ref().and_then(|d| stamp_of(d)) {
                                        stamps.push(micros().saturating_sub(t) as u32);
                                    }
                                }
                                Err(_) => ok = false,
                            }
                        }
                        ok
                    }
                    _ => false,
                };
                if !ok {
                    errors += 1;
                } else if started >= warm {
                    lat.push(started.elapsed().as_micros() as u32);
                    delays.extend(stamps);
                }
            }
            (lat, delays, errors)
        }));
    }
    let mut run = Run {
        secs,
        ..Run::default()
    };
    for t in tasks {
        let (lat, delays, errors) = t.await.unwrap();
        run.requests += lat.len();
        run.errors += errors;
        run.latencies.extend(lat);
        run.delays.extend(delays);
    }
    run.latencies.sort_unstable();
    run.delays.sort_unstable();
    run
}

/// Time from sending a stream request to its first body byte, at one connection.
pub async fn first_byte(target: &Target, n: usize) -> Vec<u32> {
    let mut send = connect(target).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 200 {
        send.ready().await.unwrap();
        let started = Instant::now();
        let resp = send
            .send_request(Scenario::Stream.request(target.addr()))
            .await
            .unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        if i >= 200 {
            out.push(started.elapsed().as_micros() as u32);
        }
        while body.frame().await.is_some() {}
    }
    out.sort_unstable();
    out
}
