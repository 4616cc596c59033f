//! Ridgeline's web page (`ridgeline ui`): sweeps, their trials, histories and
//! landscapes in a browser, served by a small HTTP server that reads everything through
//! a coordinator's client API (so it never locks or slows the database the coordinator
//! writes), behind the coordinator's token. The page's files are built into the binary:
//! it works on a cluster without internet.
//!
//! Layout: [`auth`] (token, sessions), [`api`] (the page's JSON, one route a call or
//! two to the coordinator), [`landscape`] (a scan's arrays and files), [`history`] and
//! [`npy`] (pure: a large sweep's history aggregated, `.npy` files read), [`convert`]
//! (messages as JSON), [`assets`] (the page), [`http`] (helpers).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use ridgeline_common::net::AuthChannel;
use ridgeline_common::proto::sweep_service_client::SweepServiceClient;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

pub mod analysis;
pub mod api;
pub mod assets;
pub mod auth;
pub mod convert;
pub mod history;
pub mod http;
pub mod importance;
pub mod landscape;
pub mod npy;

use http::Body;

/// A client of the coordinator.
pub type Client = SweepServiceClient<AuthChannel>;

/// How the page is served.
pub struct UiConfig {
    /// The token the page asks for (the coordinator's; none: open to whoever reaches
    /// the port, which `ridgeline ui` allows on loopback only).
    pub token: Option<String>,
    /// Whether the page offers cancel and resume.
    pub allow_control: bool,
}

struct Ctx {
    client: Client,
    auth: auth::Auth,
    allow_control: bool,
}

/// Serves the page on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    client: Client,
    cfg: UiConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    if let Ok(a) = listener.local_addr() {
        info!("web page on http://{a}");
    }
    let ctx = Arc::new(Ctx {
        client,
        auth: auth::Auth::new(cfg.token),
        allow_control: cfg.allow_control,
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("web page: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&ctx, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(%peer, "web page connection: {e}");
            }
        });
    }
}

/// What `--allow-control` lets the page do to a sweep.
const CONTROLS: [&str; 3] = ["cancel", "resume", "enqueue"];

/// The largest login form read.
const MAX_FORM_BYTES: usize = 4096;

async fn route(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = http::query_pairs(req.uri().query());
    let header = |n: hyper::header::HeaderName| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (authorization, cookie) = (
        header(hyper::header::AUTHORIZATION),
        header(hyper::header::COOKIE),
    );
    // The login form, its assets and the health check need no session.
    match (req.method(), path.as_str()) {
        (&Method::GET, "/login") => return assets::login(None),
        (&Method::POST, "/login") => return login(ctx, req).await,
        (&Method::GET, "/logout") => {
            if let Some(id) = cookie.as_deref().and_then(auth::session_of) {
                ctx.auth.close_session(id);
            }
            return http::see_other("/login");
        }
        (&Method::GET, "/healthz") => return http::full(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, p) if p.starts_with("/assets/") => {
            return assets::file(&p["/assets/".len()..]);
        }
        _ => {}
    }
    if !ctx.auth.allows(authorization.as_deref(), cookie.as_deref()) {
        return if path.starts_with("/api/") {
            http::error(
                StatusCode::UNAUTHORIZED,
                "log in with the coordinator's token",
            )
        } else {
            http::see_other("/login")
        };
    }
    let c = ctx.client.clone();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET, [""]) => assets::index(),
        (&Method::GET, ["api", "config"]) => http::json(&serde_json::json!({
            "allow_control": ctx.allow_control,
            "login": ctx.auth.required(),
        })),
        (&Method::GET, ["api", "sweeps"]) => api::sweeps(c).await,
        (&Method::GET, ["api", "sweeps", id]) => api::status(c, id).await,
        (&Method::GET, ["api", "sweeps", id, "trials"]) => api::trials(c, id, &query).await,
        (&Method::GET, ["api", "sweeps", id, "trials", n]) => match n.parse() {
            Ok(n) => api::trial(c, id, n).await,
            Err(_) => http::error(
                StatusCode::BAD_REQUEST,
                format!("{n:?} is not a trial number"),
            ),
        },
        (&Method::GET, ["api", "sweeps", id, "trials", n, "log"]) => match n.parse() {
            Ok(n) => api::log(c, id, n, &query).await,
            Err(_) => http::error(
                StatusCode::BAD_REQUEST,
                format!("{n:?} is not a trial number"),
            ),
        },
        (&Method::GET, ["api", "sweeps", id, "history"]) => api::history(c, id, &query).await,
        (&Method::GET, ["api", "sweeps", id, "events"]) => api::events(c, id).await,
        (&Method::GET, ["api", "sweeps", id, "landscape"]) => landscape::landscape(c, id).await,
        (&Method::GET, ["api", "sweeps", id, "columns"]) => analysis::columns(c, id, &query).await,
        (&Method::GET, ["api", "sweeps", id, "importance"]) => {
            analysis::importance(c, id, &query).await
        }
        (&Method::GET, ["api", "sweeps", id, "files"]) => {
            let all = query.iter().any(|(k, v)| k == "trials" && v == "1");
            landscape::files(c, id, all).await
        }
        (&Method::GET, ["api", "sweeps", id, "files", rest @ ..]) => {
            landscape::download(c, id, &rest.join("/")).await
        }
        (&Method::POST, ["api", "sweeps", id, action]) if CONTROLS.contains(action) => {
            if ctx.allow_control {
                let (id, action) = (id.to_string(), action.to_string());
                let body = match http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return http::error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                };
                api::control(c, &id, &action, &body).await
            } else {
                http::error(
                    StatusCode::FORBIDDEN,
                    "this page is read-only (start `ridgeline ui` with --allow-control)",
                )
            }
        }
        (_, ["api", ..]) => http::error(StatusCode::NOT_FOUND, format!("no such route: {path}")),
        // Any other path is a page of the application (it routes by the hash).
        (&Method::GET, _) => assets::index(),
        _ => http::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

async fn login(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let body = match http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return http::error(StatusCode::PAYLOAD_TOO_LARGE, "form too large"),
    };
    let token = auth::token_of_form(&String::from_utf8_lossy(&body)).unwrap_or_default();
    if !ctx.auth.is_token(&token) {
        return assets::login(Some("That is not the coordinator's token."));
    }
    let id = ctx.auth.open_session();
    let mut r = http::see_other("/");
    r.headers_mut().insert(
        hyper::header::SET_COOKIE,
        hyper::header::HeaderValue::from_str(&format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict",
            auth::COOKIE
        ))
        .expect("a valid cookie"),
    );
    r
}
