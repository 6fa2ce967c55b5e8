//! Tells the service manager where the process is (`sd_notify`: READY, RELOADING,
//! STOPPING, STATUS) for `Type=notify` units. Without `NOTIFY_SOCKET` every call is a
//! no-op; a failure to send is logged and never stops the process, since serving
//! matters more than reporting it.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Startup is over: listeners are open and health is known.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload began. MONOTONIC_USEC comes with it, as `Type=notify-reload` requires.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown began (the drain follows).
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// This process is the service's main process now (a successor after a binary
/// upgrade; the unit needs `NotifyAccess=all` for systemd to accept it).
pub(crate) fn main_pid() {
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status("serving (upgraded)"),
    ]);
}
