//! The page's files, built into the binary.

use hyper::{Response, StatusCode};

use crate::http::{self, Body};

const INDEX: &str = include_str!("../assets/index.html");
const LOGIN: &str = include_str!("../assets/login.html");
/// Name, content type, text.
type File = (&'static str, &'static str, &'static str);

const FILES: &[File] = &[
    ("app.js", JS, include_str!("../assets/app.js")),
    ("plot.js", JS, include_str!("../assets/plot.js")),
    ("landscape.js", JS, include_str!("../assets/landscape.js")),
    ("scan.js", JS, include_str!("../assets/scan.js")),
    ("analysis.js", JS, include_str!("../assets/analysis.js")),
    ("style.css", "text/css", include_str!("../assets/style.css")),
];

const JS: &str = "text/javascript";

/// The application's page.
pub fn index() -> Response<Body> {
    http::full(StatusCode::OK, "text/html; charset=utf-8", INDEX)
}

/// The login form, with a message after a wrong token.
pub fn login(message: Option<&str>) -> Response<Body> {
    let status = if message.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let text = LOGIN.replace("{{message}}", &message.map(escape).unwrap_or_default());
    http::full(status, "text/html; charset=utf-8", text)
}

/// One of the page's files.
pub fn file(name: &str) -> Response<Body> {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, text)) => http::full(StatusCode::OK, kind, *text),
        None => http::error(StatusCode::NOT_FOUND, format!("no such file: {name}")),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
