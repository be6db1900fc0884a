//! `keyproxy health`: asks a running keyproxy whether it is up, for container health checks in
//! images that have no curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The health URL of a keyproxy listening on `listen`: a wildcard address is reached on loopback.
pub fn default_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/_keyproxy/health",
        SocketAddr::new(ip, listen.port())
    )
}

/// GETs `url`; Ok with a line to print when it answers 200, Err saying why not.
pub async fn probe(url: &str, timeout: Duration) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url} is not a URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let answer = async {
        let resp = client
            .get(uri)
            .await
            .map_err(|e| crate::proxy::causes(&e).0)?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        Ok::<_, String>((status, body.unwrap_or_default()))
    };
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        Ok(Err(why)) => Err(format!("{url}: {why}")),
        Ok(Ok((status, _))) if status == http::StatusCode::OK => Ok(format!("{url}: 200 OK")),
        Ok(Ok((status, body))) => Err(format!(
            "{url}: {status} {}",
            String::from_utf8_lossy(&body).trim()
        )),
    }
}
