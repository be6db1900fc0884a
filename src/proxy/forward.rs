//! Sending a request upstream within its deadline, and what to tell the client when no answer
//! came.

use std::time::Duration;

use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;

use super::error::{LocalError, TimeoutPhase};
use super::h2::Lease;
use super::routes::Route;
use super::upload::{Owed, UpstreamBody};
use super::upstream::SendError;
use crate::config::Config;

/// Why no response came from the upstream.
pub(crate) enum Unanswered {
    Failed(SendError),
    /// `response_timeout` passed while the upstream held the request up, in this phase.
    TimedOut(TimeoutPhase),
}

/// Sends the request upstream and gives the upstream at most `deadline` to make the next move
/// whatever the connection's state: to connect (TLS, HTTP/2 SETTINGS included), to give the
/// request a stream, to take its body, to send the response head. Time spent waiting on the
/// client's own upload does not count (its body has deadlines of its own); the head's deadline
/// counts from the end of the upload. One timer, as before: it is looked at only when it fires.
pub(crate) async fn forward(
    route: &Route,
    parts: Parts,
    body: UpstreamBody,
    deadline: Duration,
) -> Result<(Response<Incoming>, Lease), Unanswered> {
    let progress = body.progress();
    let handed = crate::rt::clock::now_ms();
    let answer = route
        .origin
        .send(Request::from_parts(parts, body), &progress);
    tokio::pin!(answer);
    let mut wait = deadline;
    loop {
        match tokio::time::timeout(wait, &mut answer).await {
            Ok(answer) => return answer.map_err(Unanswered::Failed),
            Err(_) => match progress.owed() {
                Owed::Client => wait = deadline,
                Owed::Upstream { phase, since_ms } => {
                    let owed_for = crate::rt::clock::now_ms().saturating_sub(since_ms.max(handed));
                    match deadline.checked_sub(Duration::from_millis(owed_for)) {
                        // The upload went on after the timer was set: the rest of its time.
                        Some(left) if left >= Duration::from_millis(5) => wait = left,
                        _ => return Err(Unanswered::TimedOut(phase)),
                    }
                }
            },
        }
    }
}

/// 504 for a connect or upstream timeout, naming the phase; 502 for anything else, naming the
/// upstream and the cause.
pub(crate) fn upstream_error(upstream: &str, config: &Config, e: &Unanswered) -> LocalError {
    let timeout = |phase: TimeoutPhase, after: &Duration| LocalError::UpstreamTimeout {
        upstream: upstream.to_owned(),
        after: humantime::format_duration(*after).to_string(),
        phase,
    };
    let e = match e {
        Unanswered::TimedOut(phase) => return timeout(*phase, &config.response_timeout),
        Unanswered::Failed(e) => e,
    };
    let (cause, timed_out) = causes(&*e.error);
    if timed_out && e.connect {
        return timeout(TimeoutPhase::Connect, &config.connect_timeout);
    }
    LocalError::UpstreamUnreachable {
        upstream: upstream.to_owned(),
        cause,
    }
}

/// What went wrong sending a request, as its chain of causes, each said once; and whether an
/// I/O timeout is among them. hyper-util's own text ("client error (Connect)") is left out: it
/// says nothing its causes do not.
pub fn causes(top: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut causes: Vec<String> = Vec::new();
    let mut timed_out = false;
    let mut source = match top.is::<hyper_util::client::legacy::Error>() {
        true => top.source(),
        false => Some(top),
    };
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        let text = s.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = s.source();
    }
    if causes.is_empty() {
        causes.push(top.to_string());
    }
    (causes.join(": "), timed_out)
}

/// A `GET path` to the route's upstream with `key` injected as a request would have it, for
/// `check --live`: through the route's own connections and TLS setup. The status and at most
/// 64 KiB of the body.
pub async fn ask_with_key(
    route: &Route,
    key: &crate::keys::Key,
    path: &str,
    timeout: std::time::Duration,
) -> Result<(http::StatusCode, bytes::Bytes), String> {
    use http_body_util::BodyExt as _;
    let uri = http::Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("cannot build the URL: {e}"))?;
    let mut req = Request::get(uri)
        .body(UpstreamBody::new(
            super::upload::Outbound::Replay(http_body_util::Full::new(bytes::Bytes::new())),
            Default::default(),
        ))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    for (name, value) in route.default_headers.iter().chain(&route.add_headers) {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    super::plan::inject(route, key, req.headers_mut());
    let answer = async {
        let progress = req.body().progress();
        let (resp, _lease) = route
            .origin
            .send(req, &progress)
            .await
            .map_err(|e| causes(&*e.error).0)?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
}
