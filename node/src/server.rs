//! Starting and stopping the node: one glommio executor per core, each with its own
//! SO_REUSEPORT listeners, its own [`CoreContext`] and its ends of the core mesh; a
//! housekeeping task per core (stats, admin requests, drain); `hooks` hands each core what
//! it starts on its control plane's behalf (the cluster's pull task).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use crossbeam_channel::Receiver;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{info, warn};

use crate::config::Config;
use crate::core::{CoreContext, CoreHooks};
use crate::mesh::{build_mesh, CoreId, CoreLink, MeshEndpoints};
use crate::metrics::NodeMetrics;
use crate::session::run_connection;
use crate::shared::{AdminCommand, NodeShared};
use crate::stats::StatsBoard;
use crate::tls::{CoreTlsSetup, NodeTls};
use crate::transport::{set_nodelay, TcpTransport};

/// How often each core checks its admin queue and the drain flag.
const HOUSEKEEPING_TICK: Duration = Duration::from_millis(100);
/// How often each core publishes its statistics.
const STATS_EVERY_TICKS: u32 = 10;

/// Runs the node until a drain (SIGTERM/SIGINT) completes.
pub fn run(config: Config) -> anyhow::Result<()> {
    check_listen_addresses(&config)?;
    let cores = config.effective_cores();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pin = config.node.pin_cores && cores <= cpus;
    let draining = Arc::new(AtomicBool::new(false));
    install_signal_handlers(&draining)?;
    let (admin_tx, admin_rx): (Vec<_>, Vec<_>) =
        (0..cores).map(|_| crossbeam_channel::unbounded()).unzip();
    let upstream_tls = crate::cluster::tls::client_config(&config.cluster)?;
    let shared = Arc::new(NodeShared {
        config: Arc::new(config),
        directory: Arc::default(),
        metrics: NodeMetrics::new(),
        board: StatsBoard::new(cores),
        admin: admin_tx,
        draining,
        started: SystemTime::now(),
        upstream_tls,
    });
    let tls = NodeTls::prepare(&shared.config, cores)?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let mut handles = Vec::with_capacity(cores);
    let mesh = build_mesh(cores, shared.config.node.core_channel_capacity);
    for (index, (endpoints, admin)) in mesh.into_iter().zip(admin_rx).enumerate() {
        let placement = if pin {
            Placement::Fixed(index)
        } else {
            Placement::Unbound
        };
        let shared = Arc::clone(&shared);
        let ready = ready_tx.clone();
        let core_tls = tls.as_ref().map(|tls| tls.for_core(index));
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("corecast-core-{index}"))
            .io_memory(shared.config.node.io_memory_bytes)
            .spawn(move || async move {
                run_core(CoreId(index), shared, endpoints, admin, core_tls, ready).await;
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
    let config = &shared.config;
    let rtmpt = if config.rtmpt.enabled {
        config.rtmpt.listen.to_string()
    } else {
        "off".to_owned()
    };
    let rtmps = if config.rtmps.enabled {
        config.rtmps.listen.to_string()
    } else {
        "off".to_owned()
    };
    info!(
        listen = %config.rtmp.listen,
        %rtmps,
        http = %if config.http.enabled { config.http.listen.to_string() } else { "off".into() },
        %rtmpt,
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

/// Every enabled listener, named as in the config.
fn listen_addresses(config: &Config) -> anyhow::Result<Vec<(&'static str, SocketAddr)>> {
    let mut addrs = vec![("rtmp.listen", config.rtmp.listen)];
    if config.http.enabled {
        addrs.push(("http.listen", config.http.listen));
    }
    if config.rtmps.enabled {
        addrs.push(("rtmps.listen", config.rtmps.listen));
    }
    if config.rtmpt.enabled {
        addrs.push(("rtmpt.listen", config.rtmpt.listen));
    }
    if !config.cluster.pull_listen.is_empty() {
        let addr = config.cluster.pull_listen.parse().map_err(|_| {
            anyhow!(
                "cluster.pull_listen: {:?} is not an address (ip:port)",
                config.cluster.pull_listen
            )
        })?;
        addrs.push(("cluster.pull_listen", addr));
    }
    Ok(addrs)
}

/// Refuses listen addresses that clash, or that something already listens on.
///
/// Every core binds each address with SO_REUSEPORT, which would just as quietly let two of
/// this node's listeners, or a second node, share a port and split its connections. A plain
/// bind (no SO_REUSEPORT) of each address first turns that into a start-up error.
fn check_listen_addresses(config: &Config) -> anyhow::Result<()> {
    let addrs = listen_addresses(config)?;
    for (i, (name, addr)) in addrs.iter().enumerate() {
        if addr.port() == 0 {
            continue;
        }
        for (other, other_addr) in &addrs[i + 1..] {
            let overlap = addr.ip() == other_addr.ip()
                || (addr.is_ipv4() == other_addr.is_ipv4()
                    && (addr.ip().is_unspecified() || other_addr.ip().is_unspecified()));
            if addr.port() == other_addr.port() && overlap {
                return Err(anyhow!(
                    "{name} ({addr}) and {other} ({other_addr}) share a port: give each its own"
                ));
            }
        }
        std::net::TcpListener::bind(addr).map_err(|e| {
            anyhow!("cannot listen on {addr} ({name}): {e}; is another node running there?")
        })?;
    }
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

fn bind(addr: SocketAddr, core: CoreId, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .map_err(|e| format!("core {}: cannot listen on {addr} ({what}): {e}", core.0))
}

async fn run_core(
    id: CoreId,
    shared: Arc<NodeShared>,
    endpoints: MeshEndpoints,
    admin: Receiver<AdminCommand>,
    tls: Option<CoreTlsSetup>,
    ready: mpsc::Sender<Result<SocketAddr, String>>,
) {
    let config = Arc::clone(&shared.config);
    let listener = match bind(config.rtmp.listen, id, "rtmp") {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let http_listener = if config.http.enabled {
        match bind(config.http.listen, id, "http") {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    } else {
        None
    };
    let rtmpt_listener = if config.rtmpt.enabled {
        match TcpListener::bind(config.rtmpt.listen) {
            Ok(listener) => Some(listener),
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "core {}: cannot listen for rtmpt on {}: {e}",
                    id.0, config.rtmpt.listen
                )));
                return;
            }
        }
    } else {
        None
    };
    let pull_listener = if config.cluster.pull_listen.is_empty() {
        None
    } else {
        let addr = match config.cluster.pull_listen.parse() {
            Ok(addr) => addr,
            Err(_) => {
                let _ = ready.send(Err("cluster.pull_listen is not an address".into()));
                return;
            }
        };
        match bind(addr, id, "pull") {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
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
    let rtmpt = rtmpt_listener.map(|listener| {
        glommio::spawn_local(crate::rtmpt::listener::sweep_loop(Rc::clone(&ctx))).detach();
        glommio::spawn_local(crate::rtmpt::listener::accept_loop(
            Rc::clone(&ctx),
            listener,
        ))
    });
    let (rtmps_accept, certificate) =
        match tls.map(|tls| crate::tls::start_core(Rc::clone(&ctx), tls)) {
            Some(Ok((task, certificate))) => (Some(task), Some(certificate)),
            Some(Err(message)) => {
                let _ = ready.send(Err(message));
                return;
            }
            None => (None, None),
        };
    let local = listener.local_addr().unwrap_or(config.rtmp.listen);
    let accept = glommio::spawn_local(accept_loop(Rc::clone(&ctx), listener));
    let http = http_listener.map(|l| glommio::spawn_local(crate::http::serve(Rc::clone(&ctx), l)));
    let pull_tls = certificate.filter(|_| config.cluster.pull_tls);
    let pulls = pull_listener
        .map(|l| glommio::spawn_local(crate::cluster::serve::serve(Rc::clone(&ctx), l, pull_tls)));
    let _ = ready.send(Ok(local));
    housekeeping(&ctx, &admin).await;
    // Drain: stop accepting, then wait for connections to finish (bounded).
    drop(accept);
    drop(rtmps_accept);
    drop(pulls);
    drop(rtmpt);
    let grace = Duration::from_secs(config.node.shutdown_grace_secs);
    let deadline = Instant::now() + grace;
    info!(core = id.0, open = ctx.connections.get(), "draining");
    while ctx.connections.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(HOUSEKEEPING_TICK).await;
    }
    drop(http);
}

/// Admin requests, statistics, and the drain flag, until a drain starts.
/// What the cores start on the control plane's behalf: the cluster's pull task.
fn hooks() -> CoreHooks {
    CoreHooks {
        start_pull: Some(Box::new(|ctx, key, generation| {
            glommio::spawn_local(crate::cluster::run_pull(ctx, key, generation)).detach();
        })),
    }
}

async fn housekeeping(ctx: &Rc<CoreContext>, admin: &Receiver<AdminCommand>) {
    let mut ticks = 0u32;
    let mut last_stats = Instant::now();
    loop {
        crate::tick::sleep_aligned(HOUSEKEEPING_TICK).await;
        while let Ok(command) = admin.try_recv() {
            ctx.handle_admin(command);
        }
        ticks = ticks.wrapping_add(1);
        if ticks % STATS_EVERY_TICKS == 0 {
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

async fn accept_loop(ctx: Rc<CoreContext>, listener: TcpListener) {
    let max = ctx.config.rtmp.max_connections_per_core;
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                warn!(core = ctx.id.0, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(_) => continue,
        };
        if ctx.connections.get() >= max {
            ctx.metrics.refused("connection_limit");
            warn!(core = ctx.id.0, %peer, max, "connection refused: per-core limit reached");
            continue;
        }
        set_nodelay(&stream);
        let ctx = Rc::clone(&ctx);
        ctx.connections.set(ctx.connections.get() + 1);
        glommio::spawn_local(async move {
            run_connection(Rc::clone(&ctx), TcpTransport::new(stream), peer).await;
            ctx.connections.set(ctx.connections.get() - 1);
        })
        .detach();
    }
}
