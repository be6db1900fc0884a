//! `GET /_keyproxy/`: the page. Its four files are embedded in the binary and served as they
//! are (no template, no build step); it reads `/_keyproxy/ui/data` (`data.rs`) with the token
//! it was given, in a header, every few seconds. Every answer here is `no-store` and carries a
//! Content-Security-Policy that allows only this origin's script, style and images, so the
//! page can neither load nor send anything elsewhere.

mod data;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::proxy::{LocalError, ResponseBody, State};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/page.js");
const STYLE: &str = include_str!("assets/page.css");
const ICON: &str = include_str!("assets/icon.svg");

/// Everything the assets add to the binary, for the size budget (200 KB).
pub const ASSET_BYTES: usize = INDEX.len() + SCRIPT.len() + STYLE.len() + ICON.len();

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Is `path` one of the page's: `/_keyproxy`, `/_keyproxy/` and `/_keyproxy/ui/...`.
pub fn is_page(path: &str) -> bool {
    matches!(path, "/_keyproxy" | "/_keyproxy/" | "/_keyproxy/ui")
        || path.starts_with("/_keyproxy/ui/")
}

/// Does a browser navigate to `/_keyproxy/me`? Then it gets the page, which asks for the token
/// and shows that client's own view; a program (the CLI, an agent) gets the JSON.
pub fn wants_page<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

pub async fn serve<B>(state: &State, req: &Request<B>) -> Response<ResponseBody> {
    let path = req.uri().path();
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let mut resp = match path {
        "/_keyproxy" | "/_keyproxy/ui" => {
            let mut resp = text(StatusCode::PERMANENT_REDIRECT, "text/plain", "");
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/_keyproxy/"));
            resp
        }
        "/_keyproxy/" | "/_keyproxy/ui/" | "/_keyproxy/me" => {
            text(StatusCode::OK, "text/html; charset=utf-8", INDEX)
        }
        "/_keyproxy/ui/page.js" => text(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        "/_keyproxy/ui/page.css" => text(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/_keyproxy/ui/icon.svg" => text(StatusCode::OK, "image/svg+xml", ICON),
        "/_keyproxy/ui/data" => data::serve(state, req).await,
        path => LocalError::UnknownAdminPath {
            path: path.to_owned(),
        }
        .into_response(),
    };
    guard(resp.headers_mut());
    resp
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> Response<ResponseBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// No copy kept anywhere, nothing loaded from or sent to elsewhere, not framed, no referrer.
fn guard(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
