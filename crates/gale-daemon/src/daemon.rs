//! Running galed: listen, tell systemd it is ready, serve until SIGTERM or
//! SIGINT, re-read the configuration on SIGHUP, log a report on SIGUSR1.

use std::sync::Arc;

use anyhow::{Context, Result};
use gale_net::ServerAddr;
use gale_server::{Config, Router};
use sd_notify::NotifyState;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::settings::{self, Settings};

/// Serves `settings` until a signal stops galed.
pub async fn serve(settings: Settings) -> Result<()> {
    let mut config = settings.config.clone();
    if let Some(note) = gale_server::host::fit_descriptors(&mut config) {
        tracing::warn!("{note}");
    }
    let listeners = listen(&config, settings.default_listen).await?;
    // Server names must differ between linked servers; the host name alone does
    // not when several run on one host, so the default adds the port.
    if config.name == Config::default().name {
        if let Some(l) = listeners.first() {
            config.name = format!("{}:{}", config.name, l.local_addr()?.port());
        }
    }
    let shutdown = CancellationToken::new();
    let router = Arc::new(Router::open(config));
    let metrics = match &router.config.metrics {
        Some(addr) => Some(crate::metrics::start(addr, router.clone(), shutdown.clone()).await?),
        None => None,
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let server = tokio::spawn(gale_server::serve(
        listeners,
        router.clone(),
        shutdown.clone(),
    ));
    notify(&[NotifyState::Ready]);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                notify(&[NotifyState::Reloading]);
                reload(&settings, &router);
                notify(&[NotifyState::Ready]);
            }
            _ = usr1.recv() => {
                for line in gale_server::status::report(&router).lines() {
                    tracing::info!("{line}");
                }
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    shutdown.cancel();
    server.await.context("server task failed")?;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    eprintln!("galed: shut down cleanly");
    Ok(())
}

/// SIGHUP: applies the file again, or logs why not and keeps what runs.
fn reload(settings: &Settings, router: &Arc<Router>) {
    let what = settings
        .path
        .as_deref()
        .map_or("the command line".to_string(), |p| p.display().to_string());
    match settings::reload(settings, router) {
        Ok(r) if r.notes.is_empty() => {
            tracing::info!("SIGHUP: reloaded {what}: nothing changed")
        }
        Ok(r) => {
            tracing::info!("SIGHUP: reloaded {what}: {}", r.notes.join("; "))
        }
        Err(e) => tracing::error!("SIGHUP: not reloaded: {e:#}"),
    }
}

/// Tells systemd (Type=notify) how galed is doing; nothing when not run by it.
fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Binds every configured address. With the built-in defaults, a host without
/// IPv6 loopback is served on 127.0.0.1 alone; addresses given explicitly must
/// all work.
async fn listen(config: &Config, defaults: bool) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let addr = ServerAddr::parse_listen(addr)?;
        let l = match gale_server::host::listen(&addr).await {
            Ok(l) => l,
            Err(e) if defaults && addr.host.contains(':') && listeners.len() == 1 => {
                tracing::warn!("not listening on {addr} (no IPv6 here?): {e}");
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot listen on {addr} (is another galed running there? choose \
                         another with --listen)"
                    )
                })
            }
        };
        // A stable line on stderr, for people and for tests that listen on port 0.
        eprintln!("galed: listening on {}", l.local_addr()?);
        listeners.push(l);
    }
    Ok(listeners)
}
