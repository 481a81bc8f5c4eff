//! Signals and systemd: SIGHUP reloads, SIGTERM/SIGINT drain, and sd_notify messages tell systemd
//! where we are (READY, RELOADING, STOPPING, WATCHDOG, STATUS). Without NOTIFY_SOCKET the notify
//! calls do nothing.
//!
//! Signal handlers are installed *before* the listeners bind ([`Signals::install`]): a SIGHUP that
//! arrives right after `/ready` turns 200 (or right after READY=1) must reload, not kill the
//! process with the default disposition.

use crate::runtime::Levee;
use sd_notify::NotifyState;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

fn notify(states: &[NotifyState<'_>]) {
    let _ = sd_notify::notify(false, states);
}

/// RELOADING=1 with MONOTONIC_USEC (what `Type=notify-reload` and systemd ≥ 253 expect), sent by
/// every reload whatever triggered it (SIGHUP, `POST /reload`, the file watch).
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading config"),
        ]),
        Err(_) => notify(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading config"),
        ]),
    }
}

/// READY=1 again after a reload, with a STATUS= line saying which config serves.
pub fn notify_reloaded(result: Result<u64, u64>) {
    let status = match result {
        Ok(v) => format!("serving config version {v}"),
        Err(v) => format!("last reload failed; serving config version {v}"),
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The watchdog interval systemd asked for: `WATCHDOG_USEC`, when `WATCHDOG_PID` is absent or
/// names this process (as sd_watchdog_enabled(3) does).
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then_some(usec)
}

/// READY=1 once every listener is bound; starts the watchdog pings systemd asked for (at half
/// the interval, as systemd recommends).
pub async fn notify_ready(levee: &Arc<Levee>) {
    let version = levee.shared.snapshot.load().version;
    let status = format!("serving config version {version}");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    if let Some(usec) = watchdog_usec() {
        let every = Duration::from_micros(usec / 2).max(Duration::from_millis(1));
        tracing::info!(interval = ?every, "systemd watchdog enabled");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// The process's signal handlers, installed before anything binds.
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Serves until SIGTERM or SIGINT, reloading on every SIGHUP; then drains and returns 0.
    pub async fn serve(mut self, levee: Arc<Levee>) -> ExitCode {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    // `crate::run` sends RELOADING=1 / READY=1 around every reload.
                    let _ = levee.reload().await;
                }
                _ = self.term.recv() => {
                    tracing::info!("SIGTERM received");
                    break;
                }
                _ = self.int.recv() => {
                    tracing::info!("SIGINT received");
                    break;
                }
            }
        }
        tracing::info!("draining: no new connections; finishing in-flight requests");
        notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
        levee.shutdown().await;
        tracing::info!("drained; exiting");
        ExitCode::SUCCESS
    }
}
