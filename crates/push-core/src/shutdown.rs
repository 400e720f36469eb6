//! The shutdown signal: one token per process, cancelled by Ctrl-C or SIGTERM.

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGINT (Ctrl-C) or SIGTERM.
pub fn signal_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Re-reads the configuration on each SIGHUP until `shutdown` (unix only). A refused file
/// is logged with the key at fault; the running configuration stays.
pub fn on_hangup(reloader: std::sync::Arc<crate::reload::Reloader>, shutdown: CancellationToken) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be watched: reload with POST /v1/reload");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    if let Err(e) = reloader.reload().await {
                        tracing::error!(error = %e, "reload refused; the running configuration stays");
                    }
                }
            }
        }
    });
    #[cfg(not(unix))]
    drop((reloader, shutdown));
}
