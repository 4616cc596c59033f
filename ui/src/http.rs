//! Small pieces of HTTP: responses of each kind, query strings.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

/// Every response's body.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response with a fixed body.
pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("a valid content type"),
    );
    // Data changes as sweeps run; nothing is cached by a proxy or the browser.
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A JSON response.
pub fn json(v: &serde_json::Value) -> Response<Body> {
    full(StatusCode::OK, "application/json", v.to_string())
}

/// An error as JSON `{"error": ...}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::json!({ "error": message.into() }).to_string(),
    )
}

/// A redirect (303: the browser follows with GET).
pub fn see_other(to: &str) -> Response<Body> {
    let mut r = full(StatusCode::SEE_OTHER, "text/plain", "");
    r.headers_mut().insert(
        hyper::header::LOCATION,
        HeaderValue::from_str(to).expect("a valid location"),
    );
    r
}

/// The pairs of a query string, percent-decoded, in order.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

/// `+` as a space and `%XX` as its byte; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs(Some(
                "sort=metric%3Aval_loss&desc=1&state=completed&state=pruned&x"
            )),
            vec![
                ("sort".into(), "metric:val_loss".into()),
                ("desc".into(), "1".into()),
                ("state".into(), "completed".into()),
                ("state".into(), "pruned".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%é1"), "%é1");
    }
}
