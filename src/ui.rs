//! `ridgeline ui`: the web page for a coordinator (see the `ridgeline-ui` crate).

use anyhow::{Context, Result};
use tokio::net::TcpListener;

/// Serves the page on `listen` until Ctrl-C, reading through `client`.
pub async fn run(
    client: crate::client::Client,
    listen: &str,
    token: Option<String>,
    allow_control: bool,
) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("ui: listen on {listen} (--listen)"))?;
    let addr = listener.local_addr()?;
    // Without a token the page would show every sweep to whoever reaches the port.
    if !addr.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "ui: --listen {addr} is reachable from other hosts and no token is set: set RIDGELINE_TOKEN (the coordinator's) or listen on 127.0.0.1"
        );
    }
    // Scripts (and tests) that asked for port 0 read the address here.
    println!("web page on http://{addr}");
    ridgeline_ui::serve(
        listener,
        client,
        ridgeline_ui::UiConfig {
            token,
            allow_control,
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await;
    Ok(())
}

/// The coordinator of a `ridgeline run` folder: the run's own while it runs (its address
/// is in `coordinator.addr` and it answers), else one started here on the folder.
pub async fn folder_coordinator(
    s: &crate::settings::Settings,
    out: &std::path::Path,
) -> Result<String> {
    if let Ok(addr) = std::fs::read_to_string(out.join("coordinator.addr")) {
        let url = format!("http://{}", addr.trim());
        let sec = s.security()?;
        if crate::client::connect(&url, &sec, std::time::Duration::from_secs(2))
            .await
            .is_ok()
        {
            return Ok(url);
        }
    }
    crate::embedded::serve_folder(s, out).await
}
