//! `ironbridge auth login`: the OAuth Authorization Code flow for clients registered that way.
//! Prints the authorize URL with a random `state`, receives the browser's redirect on a loopback
//! listener at the configured `redirect_uri`, checks the state, exchanges the code, and stores
//! the refresh token in a file readable only by its owner. Later runs use the refresh-token
//! grant (see [`crate::ironclad`]).
//!
//! What does not live here: the token endpoint calls themselves (in [`crate::ironclad`]).

use super::Exit;
use crate::config::{Auth, Config};
use anyhow::{anyhow, bail, Context as _};
use axum::extract::{Query, State};
use axum::response::Html;
use rand::distr::{Alphanumeric, SampleString as _};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

/// What the loopback listener received.
type Callback = Result<String, String>;

/// The listener's shared state: where to send the first callback, and the expected `state`.
type Shared = Arc<Mutex<(Option<mpsc::Sender<Callback>>, String)>>;

/// Runs the login flow, waiting at most `timeout_secs` for the redirect.
pub async fn login(config: &Path, timeout_secs: u64) -> anyhow::Result<Exit> {
    let cfg = Config::load(config)?;
    let Auth::AuthorizationCode {
        redirect_uri,
        refresh_token_file,
        ..
    } = &cfg.ironclad.auth
    else {
        bail!(
            "{}: ironclad.auth.method is not \"authorization_code\"; `auth login` is only for Authorization Code clients",
            config.display()
        );
    };
    let redirect = url::Url::parse(redirect_uri).context("ironclad.auth.redirect_uri")?;
    let host = redirect
        .host_str()
        .unwrap_or("127.0.0.1")
        .trim_matches(|c| c == '[' || c == ']');
    let port = redirect.port_or_known_default().unwrap_or(80);
    let path = redirect.path().to_string();
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| {
            format!("cannot listen on {host}:{port} for the redirect (ironclad.auth.redirect_uri)")
        })?;

    let state = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let url = crate::ironclad::authorize_url(&cfg.ironclad, &state)?;
    println!("Open this URL in a browser and approve access:\n\n  {url}\n");
    println!("Waiting for the redirect on {redirect_uri} ...");

    let (tx, mut rx) = mpsc::channel::<Callback>(1);
    let shared = Arc::new(Mutex::new((Some(tx), state)));
    let app = axum::Router::new()
        .route(&path, axum::routing::get(callback))
        .with_state(shared);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let got = tokio::time::timeout(Duration::from_secs(timeout_secs), rx.recv()).await;
    server.abort();
    let code = match got {
        Err(_) => bail!("no redirect arrived within {timeout_secs} s"),
        Ok(None) => bail!("the loopback listener stopped before a redirect arrived"),
        Ok(Some(Err(reason))) => bail!("authorization failed: {reason}"),
        Ok(Some(Ok(code))) => code,
    };
    let tokens = crate::ironclad::exchange_code(&cfg.ironclad, &code, redirect_uri).await?;
    let refresh = tokens.refresh_token.as_ref().ok_or_else(|| {
        anyhow!("the token endpoint issued no refresh token; check the client's grant types")
    })?;
    crate::ironclad::store_refresh_token(refresh_token_file, refresh)?;
    println!(
        "Logged in. Granted scopes: {}\nRefresh token stored in {} (mode 0600).",
        tokens.scope.as_deref().unwrap_or("(not stated)"),
        refresh_token_file.display()
    );
    Ok(Exit::Ok)
}

async fn callback(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Html<&'static str> {
    let mut guard = shared.lock().await;
    let expected = guard.1.clone();
    let outcome: Callback = if let Some(err) = q.get("error") {
        Err(format!(
            "{err}: {}",
            q.get("error_description").map(String::as_str).unwrap_or("")
        ))
    } else if q.get("state").map(String::as_str) != Some(expected.as_str()) {
        Err("the redirect's state does not match (possible CSRF); start again".to_string())
    } else if let Some(code) = q.get("code") {
        Ok(code.clone())
    } else {
        Err("the redirect carried no code".to_string())
    };
    let ok = outcome.is_ok();
    if let Some(tx) = guard.0.take() {
        let _ = tx.send(outcome).await;
    }
    if ok {
        Html("<html><body><p>ironbridge: login complete. You can close this tab.</p></body></html>")
    } else {
        Html("<html><body><p>ironbridge: login failed; see the terminal.</p></body></html>")
    }
}
