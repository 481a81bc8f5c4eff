//! Signals and systemd: SIGHUP reloads, SIGTERM/SIGINT drain, and sd_notify messages tell systemd
//! where we are (READY, RELOADING, STOPPING, WATCHDOG, STATUS). Without NOTIFY_SOCKET the notify
//! calls do nothing.

use crate::runtime::Levee;
use sd_notify::NotifyState;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

fn notify(states: &[NotifyState<'_>]) {
    let _ = sd_notify::notify(false, states);
}

/// READY=1 once every listener is bound; starts the watchdog pings systemd asked for.
pub async fn notify_ready(levee: &Arc<Levee>) {
    let snap = levee.shared.snapshot.load();
    let status = format!("serving config version {}", snap.version);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let every = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// Serves until SIGTERM or SIGINT, reloading on every SIGHUP; then drains and returns 0.
pub async fn wait_for_signals(levee: Arc<Levee>) -> ExitCode {
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match NotifyState::monotonic_usec_now() {
                    Ok(now) => notify(&[NotifyState::Reloading, now]),
                    Err(_) => notify(&[NotifyState::Reloading]),
                }
                tracing::info!("SIGHUP: reloading config");
                let status = match levee.reload().await {
                    Ok(v) => format!("serving config version {v}"),
                    Err(_) => "last reload failed; serving the previous config".to_string(),
                };
                notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("draining: no new connections; finishing in-flight requests");
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    levee.shutdown().await;
    tracing::info!("drained; exiting");
    ExitCode::SUCCESS
}
