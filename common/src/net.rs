//! Connections between Ridgeline processes: TLS (optionally mutual) and the shared-token
//! check, in one place for the coordinator, the workers and the command-line clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use tonic::{Request, Status};

/// Security settings shared by every role.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// The shared token sent (clients, workers) or required (coordinator).
    pub token: Option<String>,
    /// PEM certificate: the coordinator's (server), or this client's (mutual TLS).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Clients: the CA that signed the coordinator's certificate.
    pub tls_ca: Option<PathBuf>,
    /// Coordinator: require client certificates signed by this CA (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Clients: the name to expect in the coordinator's certificate, when it differs
    /// from the URL's host.
    pub tls_domain: Option<String>,
}

/// A connection or configuration error, naming the file or address.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key file could not be read.
    #[error("{0}: {1}")]
    File(PathBuf, std::io::Error),
    /// The URL is malformed.
    #[error("coordinator URL {0:?}: {1}")]
    Url(String, String),
    /// TLS or connection setup failed.
    #[error("{0}: {1}")]
    Connect(String, String),
    /// A setting is missing or inconsistent.
    #[error("{0}")]
    Config(String),
}

fn read(p: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(p).map_err(|e| NetError::File(p.to_owned(), e))
}

/// Adds `authorization: Bearer <token>` to every request, when a token is set.
#[derive(Clone, Default)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Auth {
    /// The interceptor for a token (none: requests go out as they are).
    pub fn new(token: Option<&str>) -> Result<Self, NetError> {
        token
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| {
                    NetError::Config("token: expected printable ASCII without spaces".into())
                })
            })
            .transpose()
            .map(Auth)
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// A channel whose requests carry the token.
pub type AuthChannel = InterceptedService<Channel, Auth>;

/// Connects to a coordinator: TLS when the URL is `https://` (trusting `tls_ca`, and
/// presenting `tls_cert` for mutual TLS), and the token on every request.
pub async fn connect(
    url: &str,
    sec: &Security,
    timeout: Option<Duration>,
) -> Result<AuthChannel, NetError> {
    let ep = endpoint(url, sec, timeout)?;
    let ch = ep
        .connect()
        .await
        .map_err(|e| NetError::Connect(url.to_owned(), describe(&e)))?;
    Ok(InterceptedService::new(
        ch,
        Auth::new(sec.token.as_deref())?,
    ))
}

/// The endpoint [`connect`] uses, for callers that connect lazily.
pub fn endpoint(
    url: &str,
    sec: &Security,
    timeout: Option<Duration>,
) -> Result<Endpoint, NetError> {
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|e| NetError::Url(url.to_owned(), e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(t) = timeout {
        ep = ep.timeout(t);
    }
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &sec.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some(d) = &sec.tls_domain {
            tls = tls.domain_name(d.clone());
        }
        if let (Some(c), Some(k)) = (&sec.tls_cert, &sec.tls_key) {
            tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| NetError::Connect(url.to_owned(), describe(&e)))?;
    } else if sec.tls_ca.is_some() {
        return Err(NetError::Config(format!(
            "coordinator URL {url:?}: tls_ca is set, so the URL must start with https://"
        )));
    }
    Ok(ep)
}

/// The full chain of an error's causes on one line (tonic's top-level messages alone,
/// like "transport error", say little).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The coordinator's TLS configuration, if a certificate is set.
pub fn server_tls(sec: &Security) -> Result<Option<ServerTlsConfig>, NetError> {
    let (cert, key) = match (&sec.tls_cert, &sec.tls_key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => {
            if sec.tls_client_ca.is_some() {
                return Err(NetError::Config(
                    "tls_client_ca needs tls_cert and tls_key".into(),
                ));
            }
            return Ok(None);
        }
        _ => return Err(NetError::Config("tls_cert and tls_key go together".into())),
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &sec.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Refuses requests without the expected `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct RequireToken(Option<Arc<[u8]>>);

impl RequireToken {
    /// Checks for `token`; with none, everything passes.
    pub fn new(token: Option<&str>) -> Self {
        RequireToken(
            token.map(|t| Arc::from(format!("Bearer {t}").into_bytes().into_boxed_slice())),
        )
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.0 else { return Ok(req) };
        match req.metadata().get("authorization") {
            Some(v) if same(v.as_bytes(), want) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong token")),
            None => Err(Status::unauthenticated(
                "this coordinator requires a token: set RIDGELINE_TOKEN or token_file",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let mut check = RequireToken::new(Some("s3cret"));
        let mut send = Auth::new(Some("s3cret")).unwrap();
        let req = send.call(Request::new(())).unwrap();
        assert!(check.call(req).is_ok());
        let bad = Auth::new(Some("guess"))
            .unwrap()
            .call(Request::new(()))
            .unwrap();
        assert_eq!(check.call(bad).unwrap_err().message(), "wrong token");
        let none = Request::new(());
        assert_eq!(
            check.call(none).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(RequireToken::new(None).call(Request::new(())).is_ok());
        assert!(Auth::new(Some("has space\n")).is_err());
    }
}
