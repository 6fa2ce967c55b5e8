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
use shared::handover::{SocketEntry, SocketKind};
use shared::intent::IntentStore;
use shared::status::StatusDoc;
use shared::status_server::Readiness;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Events shown on the status page.
const PAGE_EVENTS: usize = 50;

/// The running process: current config and the roles it runs.
pub(crate) struct App {
    config: ArcSwap<Config>,
    events: Arc<EventLog>,
    lb: lb::Lb,
    gss: ArcSwapOption<gss::Gss>,
    /// The cluster membership, started once (a reload does not change it).
    cluster: Option<Arc<shared::cluster::Cluster>>,
    /// Admin intent of both roles (the state file when `state_dir` is set).
    intents: Arc<IntentStore>,
    reload_lock: tokio::sync::Mutex<()>,
    /// A [`Readiness`] as its index (0 starting, 1 ready, 2 stopping).
    phase: AtomicU8,
    /// A duplicate of the status listener's descriptor, for a handover.
    status_fd: std::sync::Mutex<Option<(SocketEntry, OwnedFd)>>,
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
    pub(crate) fn status(&self) -> StatusDoc {
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
            cluster: self.cluster.clone(),
            ..gss::GssOptions::default()
        }
    }

    /// The status page's data: VIPs with backends, sites, names and their answers,
    /// the last events.
    pub(crate) fn page(&self) -> shared::status::PageDoc {
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
    pub(crate) async fn reload(&self, who: &str) -> Result<(), String> {
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
        if old.cluster != new.cluster {
            tracing::warn!("[cluster] changes take effect on restart");
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
        self.lb.configure_bgp(new.bgp.as_ref());
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
            Command::ShowCluster => {
                let lines = app.cluster.as_ref().map(|c| c.show());
                Some(Box::pin(async move {
                    match lines {
                        Some(l) => Reply::Data(l),
                        None => Reply::error("no [cluster] section: this node is in no cluster"),
                    }
                }))
            }
            Command::ShowSites | Command::ShowDnssec | Command::Site(..) | Command::Explain(..) => {
                let gss = app.gss.load_full()?;
                Some(delegate(gss.admin(), cmd.clone(), peer, "gss"))
            }
            _ => Some(delegate(app.lb.admin(), cmd.clone(), peer, "lb")),
        }
    }
}

/// How the fleet loop reaches the roles: a peer's site override goes to the gss
/// running now (a reload may have started or stopped it), backend intent to the lb.
fn fleet_hooks(app: &Arc<App>) -> shared::fleet::Hooks {
    let apply_app = Arc::downgrade(app);
    let progress_app = Arc::downgrade(app);
    shared::fleet::Hooks {
        apply: Box::new(move |key, entry| {
            let Some(app) = apply_app.upgrade() else {
                return;
            };
            match key {
                shared::intent::Key::Site(_) => {
                    if let Some(g) = app.gss.load_full() {
                        g.core().apply_shared(key, entry);
                    }
                }
                _ => app.lb.apply_shared(key, entry),
            }
        }),
        progress: Box::new(move || {
            progress_app
                .upgrade()
                .map(|app| app.lb.fleet_progress())
                .unwrap_or_default()
        }),
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

/// How `portico run` was started.
#[derive(Default)]
pub(crate) struct RunOptions {
    /// Signalled once every listener is open (tests, the demo).
    pub ready: Option<oneshot::Sender<()>>,
    /// Cancelled to stop as on SIGTERM (the demo's Ctrl-C path).
    pub stop: CancellationToken,
    /// The upgrade socket of a running predecessor to take over from.
    pub upgrade_from: Option<PathBuf>,
    /// Logs are JSON (a successor started on SIGUSR2 logs the same way).
    pub log_json: bool,
    /// The lb's data-path workers ([`lb::LbOptions::workers`]); 0 or 1: none.
    pub workers: usize,
}

/// Runs `config` until SIGTERM/SIGINT (or `stop`), then drains up to
/// `drain_timeout` and returns. `ready` is signalled once every listener is open.
pub(crate) async fn run(config: Config, ready: Option<oneshot::Sender<()>>) -> anyhow::Result<()> {
    run_with(
        config,
        RunOptions {
            ready,
            ..RunOptions::default()
        },
    )
    .await
}

/// A successor said READY: the main loop stops accepting, then confirms.
struct Handover {
    stopped_accepting: oneshot::Sender<()>,
}

/// Runs `config` with every option of `portico run`.
pub(crate) async fn run_with(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    let RunOptions {
        ready,
        stop,
        upgrade_from,
        log_json,
        workers,
    } = opts;
    // Resolved now: after a package upgrade the path holds the new binary, while
    // this process's own image is the deleted old one.
    let exe = std::env::current_exe().ok();
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
    // In a cluster, intent is stamped with the member id: unique among the members
    // (host names need not be: several replicas may share a host), and the name the
    // peers know this node by.
    let node = match &config.cluster {
        Some(c) => c.node.clone(),
        None => node_name(),
    };
    let intents = Arc::new(match &config.state_dir {
        Some(dir) => IntentStore::open(dir, node.clone(), &events).with_context(|| {
            format!(
                "state_dir {}: admin intent cannot be kept there (fix its permissions or free space, or remove state_dir to keep intent in memory only)",
                dir.display()
            )
        })?,
        None => IntentStore::memory(node),
    });

    // A successor receives every listening socket and the state to carry before it
    // builds anything; nothing it does until READY changes the predecessor.
    let (predecessor, inherited) = match &upgrade_from {
        Some(path) => {
            let (p, i) = crate::upgrade::connect(path).await?;
            (Some(p), Some(i))
        }
        None => (None, None),
    };
    // A successor takes the gossip socket and the node's identity over, and stays
    // silent in the cluster until it has taken over.
    let cluster = match &config.cluster {
        Some(c) => {
            let socket = inherited
                .as_ref()
                .and_then(|i| i.take_udp("cluster", c.listen).into_iter().next());
            let carried = inherited.as_ref().and_then(|i| i.carried.cluster.as_ref());
            Some(
                shared::cluster::Cluster::start_with(c, socket, carried)
                    .await
                    .context("starting the cluster layer")?,
            )
        }
        None => None,
    };
    let fleet = cluster
        .as_ref()
        .map(|c| shared::fleet::Fleet::new(c.clone(), intents.clone()));
    let lb = lb::Lb::start_with(
        &config.vips,
        events.clone(),
        lb::LbOptions {
            inherited: inherited.clone(),
            hold_accept: predecessor.is_some(),
            intents: intents.clone(),
            fleet: fleet.clone(),
            workers,
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
        cluster: cluster.clone(),
        intents: intents.clone(),
        reload_lock: tokio::sync::Mutex::new(()),
        phase: AtomicU8::new(0),
        status_fd: std::sync::Mutex::new(None),
    });
    let background = CancellationToken::new();
    // The status listener has its own token: a predecessor stops it at the
    // handover, while its admin socket keeps answering until it exits.
    let status_stop = background.child_token();

    // The status listener opens before the gss starts: a gss watching this very
    // process with `lb_status` must not see its first round refused.
    if let Some(http) = &config.http {
        let taken = inherited
            .as_ref()
            .and_then(|i| i.take_tcp("status", http.listen))
            .map(tokio::net::TcpListener::from_std)
            .transpose()?;
        let listener = match taken {
            Some(l) => l,
            None => shared::status_server::bind(http.listen).await?,
        };
        {
            use std::os::fd::AsFd;
            let entry = SocketEntry {
                role: "status".to_string(),
                kind: SocketKind::Tcp,
                configured: http.listen,
                local: listener.local_addr()?,
            };
            let fd = listener.as_fd().try_clone_to_owned()?;
            *shared::sync::lock(&app.status_fd) = Some((entry, fd));
        }
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
            status_stop.clone(),
        ));
    }

    if let Some(g) = &config.gss {
        let options = gss::GssOptions {
            inherited: inherited.clone(),
            ..app.gss_options()
        };
        let gss = gss::Gss::start_with(g, events.clone(), options)
            .await
            .context("starting the gss")?;
        if let Some(i) = &inherited {
            for s in &i.carried.sites {
                let o = match s.override_state.as_deref() {
                    Some("up") => shared::admin::SiteOverride::Up,
                    Some("down") => shared::admin::SiteOverride::Down,
                    _ => continue,
                };
                if let Err(e) = gss
                    .core()
                    .set_override(&s.name, o, "carried over by the upgrade")
                {
                    tracing::warn!("override of {} not carried over: {e}", s.name);
                }
            }
        }
        app.gss.store(Some(Arc::new(gss)));
    }
    if let Some(f) = fleet {
        tokio::spawn(f.run(fleet_hooks(&app), background.clone()));
    }
    if let Some(i) = &inherited {
        for e in i.untaken() {
            tracing::info!(
                role = %e.role,
                addr = %e.configured,
                "a handed-over socket is not in the new config; closing it"
            );
        }
    }

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let (handover_tx, mut handover_rx) = tokio::sync::mpsc::channel::<Handover>(1);
    // A plain start opens its admin socket at once; a successor only once it has
    // taken over, so one that fails never takes the predecessor's paths.
    let mut socket_guards = if predecessor.is_none() {
        start_admin(&app, &config, &handover_tx, &background)?
    } else {
        None
    };
    if predecessor.is_none() {
        tracing::info!("portico running");
    }

    // The gss waited for its first keepalive round in `start`; the lb's listeners
    // are open already (unknown health counts as in rotation), but a supervisor is
    // told "ready" only once the lb's probes have said something too. A successor
    // has not accepted anything yet: it takes over only now.
    let first = tokio::select! {
        all = app.lb.first_verdicts() => Some(all),
        _ = term.recv() => None,
        _ = int.recv() => None,
        _ = stop.cancelled() => None,
    };
    // Stopped before the first verdicts: a successor has accepted nothing and leaves
    // its predecessor alone; a plain start has been accepting all along, so it drains
    // its sessions like any other stop (cutting them here lost them, seen in CI).
    if first.is_none() && predecessor.is_some() {
        drop(socket_guards);
        app.lb.shutdown().await;
        background.cancel();
        return Ok(());
    }
    if first == Some(false) {
        tracing::warn!("not every backend had a probe verdict in time; ready anyway");
    }
    if let Some(p) = predecessor {
        if let Err(e) = p.take_over().await {
            tracing::warn!("the predecessor did not confirm the handover ({e}); taking over");
        }
        if let Some(c) = &app.cluster {
            c.resume();
        }
        app.lb.open();
        socket_guards = start_admin(&app, &config, &handover_tx, &background)?;
        events.record(
            "process",
            format!(
                "took over from the running process (pid {})",
                std::process::id()
            ),
        );
        tracing::info!("portico running (upgraded)");
        crate::notify::main_pid();
    }
    let _socket_guards = socket_guards;
    if first.is_some() {
        app.lb.configure_bgp(config.bgp.as_ref());
        if let Some(tx) = ready {
            let _ = tx.send(());
        }
        app.set_readiness(Readiness::Ready);
        crate::notify::ready("serving");
    }
    let mut handed_over = None;
    while first.is_some() {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = app.reload("SIGHUP").await {
                    tracing::warn!("reload refused: {e}");
                }
            }
            _ = usr2.recv() => start_successor(&app, exe.as_deref(), log_json),
            h = handover_rx.recv() => if let Some(h) = h {
                handed_over = Some(h);
                break;
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = stop.cancelled() => break,
        }
    }

    app.set_readiness(Readiness::Stopping);
    match handed_over {
        // The service goes on in the successor: no STOPPING for systemd, no route
        // withdrawal (its sessions announce the same prefixes).
        Some(h) => {
            app.lb.stop_accepting();
            // The successor gossips as this node from now on, on the same socket.
            if let Some(c) = &app.cluster {
                c.shutdown().await;
            }
            status_stop.cancel();
            *shared::sync::lock(&app.status_fd) = None;
            let _ = h.stopped_accepting.send(());
            events.record("process", "handed over to the successor; draining");
        }
        None => {
            crate::notify::stopping();
            // Routers first: withdraw every prefix and let them move new flows to
            // the other replicas before this one stops accepting, so a stop costs
            // no connection.
            if let Some(grace) = app.lb.withdraw_routes().await {
                events.record(
                    "process",
                    format!(
                        "shutting down: routes withdrawn, waiting withdraw_grace {} before closing listeners",
                        humantime::format_duration(grace)
                    ),
                );
                tokio::time::sleep(grace).await;
            }
            app.lb.stop_accepting();
        }
    }
    let drain = app.config.load().drain_timeout;
    events.record(
        "process",
        format!(
            "shutting down: draining up to {}",
            humantime::format_duration(drain)
        ),
    );
    if let Some(g) = app.gss.load_full() {
        g.shutdown().await;
    }
    if !app.lb.wait_idle(drain).await {
        let left = app.lb.active_connections();
        tracing::warn!("drain_timeout reached with {left} connections open; closing them");
    }
    app.lb.shutdown().await;
    if let Some(c) = &app.cluster {
        c.shutdown().await;
    }
    background.cancel();
    tracing::info!("portico stopped");
    Ok(())
}

/// SIGUSR2: start this binary as a successor that takes over through the upgrade
/// socket. Needs the admin socket (the upgrade socket lives beside it).
fn start_successor(app: &App, exe: Option<&Path>, log_json: bool) {
    let cfg = app.config.load();
    let (Some(admin), Some(exe)) = (&cfg.admin, exe) else {
        app.events.record(
            "process",
            "SIGUSR2 ignored: an upgrade needs [admin] socket",
        );
        return;
    };
    let socket = crate::upgrade::socket_path(&admin.socket);
    match crate::upgrade::spawn_successor(exe, &cfg.path, &socket, log_json) {
        Ok(pid) => app.events.record(
            "process",
            format!(
                "SIGUSR2: started {} as successor (pid {pid})",
                exe.display()
            ),
        ),
        Err(e) => app.events.record(
            "process",
            format!(
                "SIGUSR2: could not start {}: {e}; still serving",
                exe.display()
            ),
        ),
    }
}

/// Serves successors on the upgrade socket, one at a time: hands over every
/// listening socket and the state to carry, and once a successor is READY asks the
/// main loop to stop accepting before confirming. A successor that goes away before
/// READY changes nothing.
async fn serve_upgrades(
    listener: tokio::net::UnixListener,
    app: Arc<App>,
    handover: tokio::sync::mpsc::Sender<Handover>,
    cancel: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = listener.accept() => match c {
                Ok((c, _)) => c,
                Err(e) => {
                    tracing::warn!("upgrade socket accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn = match conn.into_std().and_then(|c| {
            c.set_nonblocking(false)?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("upgrade socket: {e}");
                continue;
            }
        };
        match hand_over(&app, conn, &handover).await {
            Ok(true) => return,
            Ok(false) => app.events.record(
                "process",
                "upgrade aborted: the successor went away before it was ready; still serving",
            ),
            Err(e) => app
                .events
                .record("process", format!("upgrade aborted: {e}; still serving")),
        }
    }
}

/// One handover; true once the successor has taken over.
async fn hand_over(
    app: &Arc<App>,
    conn: std::os::unix::net::UnixStream,
    handover: &tokio::sync::mpsc::Sender<Handover>,
) -> anyhow::Result<bool> {
    let mut sockets = app.lb.handover_sockets()?;
    if let Some(g) = app.gss.load_full() {
        sockets.extend(g.handover_sockets().await?);
    }
    if let Some((e, fd)) = shared::sync::lock(&app.status_fd).as_ref() {
        sockets.push((e.clone(), fd.try_clone()?));
    }
    if let Some(c) = &app.cluster {
        sockets.push(c.handover_socket()?);
    }
    let mut carried = app.lb.carried();
    if let Some(c) = &app.cluster {
        carried.cluster = Some(c.carry().await);
    }
    if let Some(g) = app.gss.load_full() {
        carried.sites = g
            .page_sites()
            .into_iter()
            .map(|s| shared::handover::CarriedSite {
                name: s.name,
                override_state: s.override_state,
            })
            .collect();
    }
    let manifest = shared::handover::Manifest {
        version: shared::handover::VERSION,
        sockets: sockets.iter().map(|(e, _)| e.clone()).collect(),
        carried,
    };
    let (conn, ready) = tokio::task::spawn_blocking(move || {
        use std::os::fd::AsFd;
        let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
        let ready = crate::upgrade::offer(&conn, &manifest, &fds);
        (conn, ready)
    })
    .await?;
    if !ready? {
        return Ok(false);
    }
    let (tx, rx) = oneshot::channel();
    handover
        .send(Handover {
            stopped_accepting: tx,
        })
        .await
        .map_err(|_| anyhow::anyhow!("the process is already stopping"))?;
    rx.await
        .map_err(|_| anyhow::anyhow!("the process stopped before handing over"))?;
    tokio::task::spawn_blocking(move || crate::upgrade::confirm(&conn)).await??;
    Ok(true)
}

/// Binds the admin socket and, beside it, the upgrade socket.
fn start_admin(
    app: &Arc<App>,
    config: &Config,
    handover: &tokio::sync::mpsc::Sender<Handover>,
    background: &CancellationToken,
) -> anyhow::Result<Option<(SocketGuard, SocketGuard)>> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let listener = shared::admin::server::bind(&admin.socket)
        .with_context(|| format!("admin socket {}", admin.socket.display()))?;
    let dispatcher = Arc::new(Dispatcher::new(
        app.events.clone(),
        vec![Arc::new(AppAdmin(app.clone()))],
    ));
    tokio::spawn(shared::admin::server::serve(
        listener,
        dispatcher,
        background.clone(),
    ));
    let upgrade_path = crate::upgrade::socket_path(&admin.socket);
    let upgrade = shared::admin::server::bind(&upgrade_path)
        .with_context(|| format!("upgrade socket {}", upgrade_path.display()))?;
    tokio::spawn(serve_upgrades(
        upgrade,
        app.clone(),
        handover.clone(),
        background.clone(),
    ));
    Ok(Some((
        SocketGuard::new(admin.socket.clone()),
        SocketGuard::new(upgrade_path),
    )))
}
