//! Starting and stopping the node: the listen addresses claimed ([`crate::ports`]), one glommio
//! executor per core, each with its own SO_REUSEPORT listeners, its own [`CoreContext`] and
//! its ends of the core mesh; a housekeeping task per core (stats, admin requests, drain);
//! `hooks` hands each core what it starts on its control plane's behalf (the cluster's pull
//! task).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use crossbeam_channel::Receiver;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement, Task};
use tracing::{info, warn};

use crate::accept::{self, AcceptSettings, ConnectionKind};
use crate::config::Config;
use crate::core::{CoreContext, CoreHooks};
use crate::mesh::{build_mesh, CoreId, CoreLink, MeshEndpoints};
use crate::metrics::NodeMetrics;
use crate::rtmpe::RtmpeTransport;
use crate::session::run_connection;
use crate::shared::{AdminCommand, NodeShared};
use crate::stats::StatsBoard;
use crate::tls::{CoreTlsSetup, NodeTls};
use crate::transport::TcpTransport;

/// Runs the node until a drain (SIGTERM/SIGINT) completes.
/// `reloader` reads the config again on SIGHUP or `POST /api/v1/reload` (None: no reload).
pub fn run(config: Config, reloader: Option<crate::reload::Reloader>) -> anyhow::Result<()> {
    // `Config::validate` refused listeners that share a port; what is left is ours to claim.
    config.validate()?;
    config.check_pull_token()?;
    let plan = Arc::new(ListenPlan::new(&config));
    // Held until the process exits: a second node on one of these addresses is refused.
    let (_claims, startup_locks) = crate::ports::claim(&plan.addresses())?;
    crate::auth::warn_open(&config.auth);
    crate::player::assets::preload(&config.player_page);
    let cores = config.effective_cores();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pin = config.node.pin_cores && cores <= cpus;
    let draining = Arc::new(AtomicBool::new(false));
    install_signal_handlers(&draining)?;
    let (admin_tx, admin_rx): (Vec<_>, Vec<_>) = (0..cores)
        .map(|_| {
            let (queue, commands, bell) = crate::shared::AdminQueue::new();
            (queue, (commands, bell))
        })
        .unzip();
    let upstream_tls = crate::cluster::tls::client_config(&config.cluster)?;
    let stream_limits = crate::stream_limits::StreamLimits::new(
        config.stream.max_streams_per_node,
        config.stream.max_streams_per_address,
    );
    let config = Arc::new(config);
    let metrics = NodeMetrics::new();
    let registry = crate::registry::Registry::start(&config, &metrics)
        .map_err(|e| anyhow!("livestream registry: {e}"))?;
    let shared = Arc::new(NodeShared {
        reloader: reloader.map(Arc::new),
        stream_limits,
        config: std::sync::RwLock::new(config),
        directory: Arc::default(),
        metrics,
        board: StatsBoard::new(cores),
        admin: admin_tx,
        draining,
        started: SystemTime::now(),
        upstream_tls,
        pull_in: Default::default(),
        activity: Default::default(),
        registry,
        hls: Default::default(),
        restream: Default::default(),
    });
    if let Some(registry) = &shared.registry {
        registry.attach(Arc::downgrade(&shared));
        if shared.config().cluster.accepts_publishers() {
            // Each core resumes its share (`pull_in::start_configured`); until all have read
            // theirs, `/readyz` and the pulls API say the node is starting.
            shared.pull_in.expect_stored(cores);
        }
    }
    crate::livestreams::targets_engine::install(&shared);
    shared.metrics.watch_drain(Arc::clone(&shared.draining));
    reload_on_sighup(&shared)?;
    let tls = NodeTls::prepare(&shared.config(), cores)?;
    if let Some(not_after) = tls.as_ref().and_then(NodeTls::not_after) {
        for core in 0..cores {
            shared.metrics.certificate_expiry(core, not_after);
        }
    }
    let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let mut handles = Vec::with_capacity(cores);
    let mesh = build_mesh(cores, shared.config().node.core_channel_capacity);
    let draining_cores = Arc::new(AtomicUsize::new(cores));
    for (index, (endpoints, admin)) in mesh.into_iter().zip(admin_rx).enumerate() {
        let placement = if pin {
            Placement::Fixed(index)
        } else {
            Placement::Unbound
        };
        let shared = Arc::clone(&shared);
        let ready = ready_tx.clone();
        let core_tls = tls.as_ref().map(|tls| tls.for_core(index));
        let draining_cores = Arc::clone(&draining_cores);
        let plan = Arc::clone(&plan);
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("corecast-core-{index}"))
            .io_memory(shared.config().node.io_memory_bytes)
            .ring_depth(shared.config().node.io_ring_depth)
            .spawn(move || async move {
                let core = CoreStart {
                    id: CoreId(index),
                    shared,
                    endpoints,
                    admin,
                    tls: core_tls,
                    ready,
                    draining_cores,
                    plan,
                };
                run_core(core).await;
            })
            .map_err(|e| anyhow!("starting executor for core {index}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => return Err(anyhow!(message)),
            Err(_) => return Err(anyhow!("a core stopped during start-up")),
        }
    }
    // Every core listens: a node starting on these ports now sees our listeners.
    drop(startup_locks);
    info!(
        listen = %shown(&plan.rtmp),
        rtmps = %shown(&plan.rtmps),
        http = %shown(&plan.http),
        rtmpt = %shown(&plan.rtmpt),
        pull = %shown(&plan.pull),
        cores,
        pinned = pin,
        "corecast ready"
    );
    for handle in handles {
        handle.join().map_err(|e| anyhow!("core stopped: {e}"))?;
    }
    info!("corecast stopped");
    Ok(())
}

/// One value per listener, in config order.
#[derive(Debug)]
struct PerListener<T> {
    rtmp: T,
    http: T,
    rtmps: T,
    rtmpt: T,
    pull: T,
}

impl<T> PerListener<T> {
    /// The config field that names each listener.
    const NAMES: [&'static str; 5] = [
        "rtmp.listen",
        "http.listen",
        "rtmps.listen",
        "rtmpt.listen",
        "cluster.pull_listen",
    ];

    /// Each value with its listener's config field.
    fn named(&self) -> [(&'static str, &T); 5] {
        let [rtmp, http, rtmps, rtmpt, pull] = Self::NAMES;
        [
            (rtmp, &self.rtmp),
            (http, &self.http),
            (rtmps, &self.rtmps),
            (rtmpt, &self.rtmpt),
            (pull, &self.pull),
        ]
    }

    /// `f(field, value)` for each listener.
    fn map<U>(&self, mut f: impl FnMut(&'static str, &T) -> U) -> PerListener<U> {
        match self.try_map(|name, value| Ok::<U, Infallible>(f(name, value))) {
            Ok(mapped) => mapped,
            Err(never) => match never {},
        }
    }

    /// `f(field, value)` for each listener; the first error stops it.
    fn try_map<U, E>(
        &self,
        mut f: impl FnMut(&'static str, &T) -> Result<U, E>,
    ) -> Result<PerListener<U>, E> {
        let [rtmp, http, rtmps, rtmpt, pull] = Self::NAMES;
        Ok(PerListener {
            rtmp: f(rtmp, &self.rtmp)?,
            http: f(http, &self.http)?,
            rtmps: f(rtmps, &self.rtmps)?,
            rtmpt: f(rtmpt, &self.rtmpt)?,
            pull: f(pull, &self.pull)?,
        })
    }
}

/// The addresses each listener binds on every core: the config's listen fields, less the
/// IPv6 addresses a form only implied on a host without IPv6 ([`crate::ports::usable`]).
/// Empty for a listener that is off.
type ListenPlan = PerListener<Vec<SocketAddr>>;

impl ListenPlan {
    fn new(config: &Config) -> ListenPlan {
        let enabled = PerListener {
            rtmp: Some(&config.rtmp.listen),
            http: Some(&config.http.listen).filter(|_| config.http.enabled),
            rtmps: Some(&config.rtmps.listen).filter(|_| config.rtmps.enabled),
            rtmpt: Some(&config.rtmpt.listen).filter(|_| config.rtmpt.enabled),
            pull: config.cluster.pull_listen.0.as_ref(),
        };
        enabled.map(|name, listen| listen.map_or_else(Vec::new, |l| crate::ports::usable(name, l)))
    }

    /// Every address, named by its config field (for the claims and their errors).
    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        self.named()
            .into_iter()
            .flat_map(|(name, addrs)| addrs.iter().map(move |&addr| (name, addr)))
            .collect()
    }
}

/// A listener's addresses for the log, one token: `0.0.0.0:1935,[::]:1935`, or `off`.
fn shown(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "off".to_owned();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// SIGHUP reloads the config (and, with RTMPS, the certificate: `tls` has its own flag), on
/// a thread of its own: reloads run one after another however many signals come.
fn reload_on_sighup(shared: &Arc<NodeShared>) -> anyhow::Result<()> {
    let Some(reloader) = shared.reloader.clone() else {
        return Ok(());
    };
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("corecast-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                reloader.reload(&shared);
            }
        })?;
    Ok(())
}

/// SIGTERM/SIGINT start a drain; a second one exits at once.
fn install_signal_handlers(draining: &Arc<AtomicBool>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGTERM, SIGINT] {
        // Registered first, so it sees the flag before the second handler sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(draining))?;
        signal_hook::flag::register(signal, Arc::clone(draining))?;
    }
    Ok(())
}

/// This core's listeners on every address of one listener (`what` names its config field).
fn bind(addrs: &[SocketAddr], core: CoreId, what: &str) -> Result<Vec<TcpListener>, String> {
    addrs
        .iter()
        .map(|&addr| {
            crate::ports::bind_listener(addr)
                .map_err(|e| format!("core {}: cannot listen on {addr} ({what}): {e}", core.0))
        })
        .collect()
}

/// What one core's executor starts with.
struct CoreStart {
    id: CoreId,
    shared: Arc<NodeShared>,
    endpoints: MeshEndpoints,
    admin: (Receiver<AdminCommand>, AdminBell),
    tls: Option<CoreTlsSetup>,
    /// Where the core says it listens (or why it cannot).
    ready: mpsc::Sender<Result<SocketAddr, String>>,
    /// Cores whose connections have not all ended yet; see the drain in [`run_core`].
    draining_cores: Arc<AtomicUsize>,
    /// The addresses to bind.
    plan: Arc<ListenPlan>,
}

async fn run_core(start: CoreStart) {
    let CoreStart {
        id,
        shared,
        endpoints,
        admin,
        tls,
        ready,
        draining_cores,
        plan,
    } = start;
    let config = shared.config();
    let listeners = match plan.try_map(|name, addrs| bind(addrs, id, name)) {
        Ok(listeners) => listeners,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let capacity = config.node.core_channel_capacity;
    let mut links = Vec::with_capacity(endpoints.senders.len());
    for sender in endpoints.senders {
        links.push(sender.map(|sender| {
            let link = CoreLink::new(capacity);
            let pump = Rc::clone(&link);
            glommio::spawn_local(async move { pump.pump(sender.connect().await).await }).detach();
            link
        }));
    }
    let ctx = CoreContext::new(id, shared, links, hooks());
    for (from, receiver) in endpoints.receivers.into_iter().enumerate() {
        let Some(receiver) = receiver else { continue };
        let ctx = Rc::clone(&ctx);
        glommio::spawn_local(async move {
            let receiver = receiver.connect().await;
            while let Some(message) = receiver.recv().await {
                ctx.handle_core_message(CoreId(from), message);
            }
        })
        .detach();
    }
    let local = listeners.rtmp.first().and_then(|l| l.local_addr().ok());
    let tasks = start_accepting(&ctx, listeners, tls);
    crate::pull_in::start_configured(&ctx);
    let _ = ready.send(local.ok_or_else(|| format!("core {}: no rtmp listener", id.0)));
    let (admin, mut bell) = admin;
    housekeeping(&ctx, &admin, &mut bell).await;
    // Drain: stop accepting sessions, then wait (bounded) until every connection that holds
    // the drain has dropped its permit: RTMP, RTMPS, pulls served and RTMPT tunnels.
    drop(tasks.sessions);
    let grace = Duration::from_secs(config.node.shutdown_grace_secs);
    let deadline = Instant::now() + grace;
    let open = || ctx.connections.holding_drain();
    let asked = ctx.request_reconnects();
    info!(
        core = id.0,
        open = open(),
        asked_to_reconnect = asked,
        "draining"
    );
    sleep_until(deadline, || open() == 0).await;
    if open() > 0 {
        warn!(
            core = id.0,
            open = open(),
            "grace time over; closing the connections left"
        );
    }
    // HTTP and RTMPT listen until every core is done: a core that closed its listener while
    // others still serve would reset the connections the kernel had queued on it (a health
    // check, a tunnel's next request).
    draining_cores.fetch_sub(1, Ordering::AcqRel);
    sleep_until(deadline, || draining_cores.load(Ordering::Acquire) == 0).await;
    drop(tasks.http);
}

/// A core's accept tasks (one per listener address), by when the drain stops them.
struct AcceptTasks {
    /// RTMP, RTMPS and pulls: dropped as the drain starts.
    sessions: Vec<Task<()>>,
    /// HTTP and RTMPT: dropped when every core is done (see [`run_core`]).
    http: Vec<Task<()>>,
}

/// Starts an accept task on each of this core's listeners (and RTMPT's sweeper, RTMPS's
/// certificate reloads).
fn start_accepting(
    ctx: &Rc<CoreContext>,
    listeners: PerListener<Vec<TcpListener>>,
    tls: Option<CoreTlsSetup>,
) -> AcceptTasks {
    let mut sessions = Vec::new();
    let mut http = Vec::new();
    let certificate = tls.map(|tls| {
        let (tasks, certificate) = crate::tls::start_core(Rc::clone(ctx), tls, listeners.rtmps);
        sessions.extend(tasks);
        certificate
    });
    for l in listeners.rtmp {
        sessions.push(glommio::spawn_local(accept_loop(Rc::clone(ctx), l)));
    }
    let pull_tls = certificate
        .clone()
        .filter(|_| ctx.config().cluster.pull_tls);
    let rtmpt_tls = certificate.clone().filter(|_| ctx.config().rtmpt.tls);
    let http_tls = certificate.filter(|_| ctx.config().http.tls);
    for l in listeners.pull {
        let tls = pull_tls.clone();
        sessions.push(glommio::spawn_local(crate::cluster::serve::serve(
            Rc::clone(ctx),
            l,
            tls,
        )));
    }
    for l in listeners.http {
        let tls = http_tls.clone();
        http.push(glommio::spawn_local(crate::http::serve(
            Rc::clone(ctx),
            l,
            tls,
        )));
    }
    // RTMPT keeps accepting while the core drains: an open tunnel's next request may come on
    // a new connection. Its `/open` is refused then (see `Tunnels::open`).
    if !listeners.rtmpt.is_empty() {
        glommio::spawn_local(crate::rtmpt::listener::sweep_loop(Rc::clone(ctx))).detach();
    }
    for l in listeners.rtmpt {
        http.push(glommio::spawn_local(crate::rtmpt::listener::accept_loop(
            Rc::clone(ctx),
            l,
            rtmpt_tls.clone(),
        )));
    }
    AcceptTasks { sessions, http }
}

/// Sleeps in housekeeping ticks until `done` or `deadline`.
async fn sleep_until(deadline: Instant, done: impl Fn() -> bool) {
    while !done() && Instant::now() < deadline {
        glommio::timer::sleep(crate::chores::PERIOD).await;
    }
}

/// What the cores start on the control plane's behalf: the cluster's pull task.
fn hooks() -> CoreHooks {
    CoreHooks {
        start_pull: Some(Box::new(|ctx, key, generation| {
            glommio::spawn_local(crate::cluster::run_pull(ctx, key, generation)).detach();
        })),
    }
}

/// Rung when an admin command is queued for this core (see [`crate::shared::AdminQueue`]).
type AdminBell = futures_channel::mpsc::UnboundedReceiver<()>;

/// Admin requests, statistics, and the drain flag, until a drain starts: at the rounds of
/// the core's one chore schedule (`chores`), which rides the core's ticks and other cores'
/// batches where it can.
async fn housekeeping(ctx: &Rc<CoreContext>, admin: &Receiver<AdminCommand>, bell: &mut AdminBell) {
    let mut schedule = crate::chores::Schedule::new();
    let mut last_stats = Instant::now();
    loop {
        let period = crate::chores::period(ctx.config().player.merge_window_ms);
        schedule
            .sleep(ctx.has_clients(), period, async {
                use futures_lite::StreamExt;
                if bell.next().await.is_none() {
                    // No sender left (the node is going away): the timer alone paces.
                    std::future::pending::<()>().await;
                }
            })
            .await;
        while bell.try_recv().is_ok() {}
        while let Ok(command) = admin.try_recv() {
            ctx.handle_admin(command);
        }
        if crate::chores::stats_due(last_stats.elapsed(), period) {
            let elapsed = last_stats.elapsed().as_secs_f64();
            last_stats = Instant::now();
            let stats = ctx.collect_stats(elapsed);
            ctx.shared.board.publish(ctx.id.0, stats);
        }
        if ctx.shared.is_draining() {
            return;
        }
    }
}

/// Accepts RTMP connections on this core until the task is dropped.
async fn accept_loop(ctx: Rc<CoreContext>, listener: TcpListener) {
    let settings = AcceptSettings {
        kind: ConnectionKind::Rtmp,
        max_per_core: ctx.config().rtmp.max_connections_per_core,
        nodelay: true,
    };
    let serve_ctx = Rc::clone(&ctx);
    accept::accept_loop(ctx, listener, settings, move |stream, peer, permit| {
        let ctx = Rc::clone(&serve_ctx);
        async move {
            if ctx.config().rtmp.rtmpe {
                // The RC4 pipe only where RTMPE is on: plain connections keep the bare one.
                // Boxed: the RC4 pipe's state would otherwise make every plain connection's
                // task as large as an RTMPE one (a task is as large as its largest state).
                Box::pin(run_connection(
                    ctx,
                    RtmpeTransport::new(TcpTransport::new(stream)),
                    peer,
                ))
                .await;
            } else {
                run_connection(ctx, TcpTransport::new(stream), peer).await;
            }
            drop(permit);
        }
    })
    .await;
}
