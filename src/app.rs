//! The process supervisor behind `portico run`: starts the roles a config asks for,
//! the status/metrics listener and the admin socket; reloads on SIGHUP or `reload`;
//! drains and exits on SIGTERM/SIGINT. It only wires the library crates together, and
//! tells supervisors where it is: `sd_notify` READY once the first probe verdicts are
//! in (RELOADING around reloads, STOPPING at shutdown) and the same phase on
//! `GET /ready`.

use anyhow::Context;
use arc_swap::{ArcSwap, ArcSwapOption};
use shared::admin::server::{Dispatcher, SocketGuard};
use shared::admin::{AdminHandler, Command, HandlerFuture, Peer, Reply};
use shared::config::Config;
use shared::events::EventLog;
use shared::intent::IntentStore;
use shared::status::StatusDoc;
use shared::status_server::Readiness;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Events shown on the status page.
const PAGE_EVENTS: usize = 50;

/// The running process: current config and the roles it runs.
pub struct App {
    config: ArcSwap<Config>,
    events: Arc<EventLog>,
    lb: lb::Lb,
    gss: ArcSwapOption<gss::Gss>,
    /// Admin intent of both roles (the state file when `state_dir` is set).
    intents: Arc<IntentStore>,
    reload_lock: tokio::sync::Mutex<()>,
    /// A [`Readiness`] as its index (0 starting, 1 ready, 2 stopping).
    phase: AtomicU8,
}

impl App {
    fn readiness(&self) -> Readiness {
        match self.phase.load(Ordering::Acquire) {
            0 => Readiness::Starting,
            1 => Readiness::Ready,
            _ => Readiness::Stopping,
        }
    }

    fn set_readiness(&self, r: Readiness) {
        let v = match r {
            Readiness::Starting => 0,
            Readiness::Ready => 1,
            Readiness::Stopping => 2,
        };
        self.phase.store(v, Ordering::Release);
    }

    /// The `/status` document: every VIP of the lb and every site of the gss.
    pub fn status(&self) -> StatusDoc {
        StatusDoc {
            vips: self.lb.status(),
            sites: self
                .gss
                .load()
                .as_ref()
                .map(|g| g.status())
                .unwrap_or_default(),
        }
    }

    /// How the gss starts: the process's intent store, and the serial kept in the
    /// `state_dir` the process started with (a changed one applies on restart).
    fn gss_options(&self) -> gss::GssOptions {
        gss::GssOptions {
            intents: self.intents.clone(),
            state_dir: self.config.load().state_dir.clone(),
            ..gss::GssOptions::default()
        }
    }

    /// The status page's data: VIPs with backends, sites, names and their answers,
    /// the last events.
    pub fn page(&self) -> shared::status::PageDoc {
        let gss = self.gss.load_full();
        shared::status::PageDoc {
            vips: self.lb.page(),
            sites: gss.as_ref().map(|g| g.page_sites()).unwrap_or_default(),
            names: gss.as_ref().map(|g| g.page_names()).unwrap_or_default(),
            events: self
                .events
                .last(PAGE_EVENTS)
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Re-reads the config file and applies it; on any error the old config keeps
    /// serving and the errors are returned for the operator. Every outcome is counted
    /// in `portico_config_reloads_total` and recorded as an event.
    pub async fn reload(&self, who: &str) -> Result<(), String> {
        let _serial = self.reload_lock.lock().await;
        crate::notify::reloading();
        let path = self.config.load().path.clone();
        let outcome = match shared::config::load(&path) {
            Err(errors) => {
                for e in &errors.0 {
                    tracing::warn!("{e}");
                }
                let event = format!(
                    "reload refused ({who}): {} error(s); the running config keeps serving",
                    errors.0.len()
                );
                Err((event, errors.to_string()))
            }
            Ok(new) => self
                .apply(new)
                .await
                .map_err(|e| (format!("reload failed ({who}): {e}"), e)),
        };
        if self.readiness() == Readiness::Ready {
            let status = match &outcome {
                Ok(()) => "serving; config reloaded",
                Err(_) => "serving; reload refused, old config kept",
            };
            crate::notify::ready(status);
        }
        match outcome {
            Ok(()) => {
                metrics::counter!("portico_config_reloads_total", "result" => "ok").increment(1);
                self.events.record(
                    "config",
                    format!("reloaded from {} ({who})", path.display()),
                );
                Ok(())
            }
            Err((event, reply)) => {
                metrics::counter!("portico_config_reloads_total", "result" => "failed")
                    .increment(1);
                self.events.record("config", event);
                Err(reply)
            }
        }
    }

    /// Applies a validated config to the roles, all or nothing: every role's fallible
    /// part first (the gss's zone and probes checked, or a new gss started and bound;
    /// the lb's binds, certificates and probes), then both commits, which cannot
    /// fail; a failure anywhere leaves both roles as they were.
    async fn apply(&self, new: Config) -> Result<(), String> {
        let old = self.config.load_full();
        if old.admin != new.admin || old.http != new.http || old.state_dir != new.state_dir {
            tracing::warn!(
                "admin socket, http listener and state_dir changes take effect on restart"
            );
        }
        let gss_change = match (self.gss.load_full(), &new.gss) {
            (Some(g), Some(c)) => {
                let prepared = g.prepare(c).map_err(|e| e.to_string())?;
                GssChange::Reload(g, Box::new(prepared))
            }
            (None, Some(c)) => {
                let g = gss::Gss::start_with(c, self.events.clone(), self.gss_options())
                    .await
                    .map_err(|e| e.to_string())?;
                GssChange::Start(Arc::new(g))
            }
            (Some(g), None) => GssChange::Stop(g),
            (None, None) => GssChange::None,
        };
        let lb_plan = match self.lb.prepare(&new.vips).await {
            Ok(plan) => plan,
            Err(e) => {
                if let GssChange::Start(g) = gss_change {
                    g.shutdown().await;
                }
                return Err(e.to_string());
            }
        };
        // Both roles are prepared: from here nothing can fail.
        self.lb.commit(lb_plan);
        match gss_change {
            GssChange::Reload(g, plan) => g.commit(*plan),
            GssChange::Start(g) => self.gss.store(Some(g)),
            GssChange::Stop(g) => {
                g.shutdown().await;
                self.gss.store(None);
            }
            GssChange::None => {}
        }
        self.config.store(Arc::new(new));
        Ok(())
    }
}

/// What a reload does to the gss, decided (and its fallible part done) before the
/// lb changes.
enum GssChange {
    Reload(Arc<gss::Gss>, Box<gss::Plan>),
    Start(Arc<gss::Gss>),
    Stop(Arc<gss::Gss>),
    None,
}

/// Routes admin commands: `reload` to the app, site commands to the gss, the rest to
/// the lb. Looks the gss up per command because a reload may start or stop it.
struct AppAdmin(Arc<App>);

impl AdminHandler for AppAdmin {
    fn handle<'a>(&'a self, cmd: &'a Command, peer: Peer) -> Option<HandlerFuture<'a>> {
        let app = &self.0;
        match cmd {
            Command::Reload => Some(Box::pin(async move {
                let who = format!(
                    "admin uid {}",
                    peer.uid.map_or("?".into(), |u| u.to_string())
                );
                match app.reload(&who).await {
                    Ok(()) => Reply::Ok,
                    Err(e) => {
                        Reply::Error(format!("reload refused, old config still serving: {e}"))
                    }
                }
            })),
            Command::ShowSites | Command::Site(..) | Command::Explain(..) => {
                let gss = app.gss.load_full()?;
                Some(delegate(gss.admin(), cmd.clone(), peer, "gss"))
            }
            _ => Some(delegate(app.lb.admin(), cmd.clone(), peer, "lb")),
        }
    }
}

/// Hands `cmd` to a role's handler; owns both so the future outlives this call.
fn delegate(
    handler: Arc<dyn AdminHandler>,
    cmd: Command,
    peer: Peer,
    role: &'static str,
) -> HandlerFuture<'static> {
    Box::pin(async move {
        let reply = match handler.handle(&cmd, peer) {
            Some(f) => f.await,
            None => Reply::error(format!("the {role} does not handle this command")),
        };
        reply
    })
}

/// This node's id in intent timestamps: the host name (unique in a fleet, stable
/// across restarts), or `portico` when it cannot be read.
fn node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if ok && !s.is_empty() => s.to_string(),
        _ => "portico".to_string(),
    }
}

/// Raises the open-file soft limit to the hard limit: every proxied connection costs
/// two descriptors and mail clients hold thousands of idle IMAP sessions.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &buckets)
        .ok()?;
    match builder.install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("metrics recorder not installed: {e}");
            None
        }
    }
}

/// Runs `config` until SIGTERM/SIGINT (or `stop`), then drains up to
/// `drain_timeout` and returns. `ready` is signalled once every listener is open.
pub async fn run(config: Config, ready: Option<oneshot::Sender<()>>) -> anyhow::Result<()> {
    run_until(config, ready, CancellationToken::new()).await
}

/// As [`run`], also stopping when `stop` is cancelled (the demo's Ctrl-C path).
pub async fn run_until(
    config: Config,
    ready: Option<oneshot::Sender<()>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    raise_nofile_limit();
    let prometheus = install_metrics();
    lb::metrics::describe();
    lb::http::describe_metrics();
    metrics::describe_counter!(
        "portico_config_reloads_total",
        "Config reloads by result (ok, failed); a failed one leaves the old config serving"
    );
    let events = Arc::new(EventLog::new(1000));
    // Intent is read before either role starts, so a drained backend or a site
    // forced down is so from the first connection and the first answer.
    let intents = Arc::new(match &config.state_dir {
        Some(dir) => IntentStore::open(dir, node_name(), &events).with_context(|| {
            format!(
                "state_dir {}: admin intent cannot be kept there (fix its permissions or free space, or remove state_dir to keep intent in memory only)",
                dir.display()
            )
        })?,
        None => IntentStore::memory(node_name()),
    });
    let lb = lb::Lb::start_with(
        &config.vips,
        events.clone(),
        lb::LbOptions {
            intents: intents.clone(),
            ..lb::LbOptions::default()
        },
    )
    .await
    .context("starting the lb")?;
    let app = Arc::new(App {
        config: ArcSwap::from_pointee(config.clone()),
        events: events.clone(),
        lb,
        gss: ArcSwapOption::new(None),
        intents: intents.clone(),
        reload_lock: tokio::sync::Mutex::new(()),
        phase: AtomicU8::new(0),
    });
    let background = CancellationToken::new();

    // The status listener opens before the gss starts: a gss watching this very
    // process with `lb_status` must not see its first round refused.
    if let Some(http) = &config.http {
        let listener = shared::status_server::bind(http.listen).await?;
        let status_app = app.clone();
        let ready_app = app.clone();
        let page_app = app.clone();
        let endpoints = shared::status_server::Endpoints {
            status: Arc::new(move || status_app.status()),
            metrics: match prometheus {
                Some(h) => Arc::new(move || h.render()),
                None => Arc::new(String::new),
            },
            ready: Arc::new(move || ready_app.readiness()),
            page: Arc::new(move || page_app.page()),
        };
        tokio::spawn(shared::status_server::serve(
            listener,
            endpoints,
            background.clone(),
        ));
    }

    if let Some(g) = &config.gss {
        let gss = gss::Gss::start_with(g, events.clone(), app.gss_options())
            .await
            .context("starting the gss")?;
        app.gss.store(Some(Arc::new(gss)));
    }

    let _socket_guard = match &config.admin {
        Some(admin) => {
            let listener = shared::admin::server::bind(&admin.socket)
                .with_context(|| format!("admin socket {}", admin.socket.display()))?;
            let dispatcher = Arc::new(Dispatcher::new(
                events.clone(),
                vec![Arc::new(AppAdmin(app.clone()))],
            ));
            tokio::spawn(shared::admin::server::serve(
                listener,
                dispatcher,
                background.clone(),
            ));
            Some(SocketGuard(admin.socket.clone()))
        }
        None => None,
    };

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!("portico running");
    if let Some(tx) = ready {
        let _ = tx.send(());
    }
    // The gss waited for its first keepalive round in `start`; the lb's listeners
    // are open already (unknown health counts as in rotation), but a supervisor is
    // told "ready" only once the lb's probes have said something too.
    let first = tokio::select! {
        all = app.lb.first_verdicts() => Some(all),
        _ = term.recv() => None,
        _ = int.recv() => None,
        _ = stop.cancelled() => None,
    };
    if let Some(all) = first {
        if !all {
            tracing::warn!("not every backend had a probe verdict in time; ready anyway");
        }
        app.set_readiness(Readiness::Ready);
        crate::notify::ready("serving");
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    if let Err(e) = app.reload("SIGHUP").await {
                        tracing::warn!("reload refused: {e}");
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = stop.cancelled() => break,
            }
        }
    }

    app.set_readiness(Readiness::Stopping);
    crate::notify::stopping();
    let drain = app.config.load().drain_timeout;
    events.record(
        "process",
        format!(
            "shutting down: draining up to {}",
            humantime::format_duration(drain)
        ),
    );
    app.lb.stop_accepting();
    if let Some(g) = app.gss.load_full() {
        g.shutdown().await;
    }
    if !app.lb.wait_idle(drain).await {
        let left = app.lb.active_connections();
        tracing::warn!("drain_timeout reached with {left} connections open; closing them");
    }
    app.lb.shutdown().await;
    background.cancel();
    tracing::info!("portico stopped");
    Ok(())
}
