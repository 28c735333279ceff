//! Starting the node: one glommio executor per core, each with its own SO_REUSEPORT listener,
//! its own [`CoreContext`] and its ends of the core mesh.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{info, warn};

use crate::config::Config;
use crate::core::CoreContext;
use crate::directory::Directory;
use crate::mesh::{build_mesh, CoreId, CoreLink, MeshEndpoints};
use crate::session::run_connection;
use crate::tls::{CoreTlsSetup, NodeTls};
use crate::transport::{set_nodelay, TcpTransport};

/// Runs the node until every core stops (which, without a drain signal, is never).
pub fn run(config: Config) -> anyhow::Result<()> {
    let cores = config.effective_cores();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pin = config.node.pin_cores && cores <= cpus;
    let config = Arc::new(config);
    let directory = Arc::new(Directory::default());
    let tls = NodeTls::prepare(&config, cores)?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let mut handles = Vec::with_capacity(cores);
    for (index, endpoints) in build_mesh(cores, config.node.core_channel_capacity)
        .into_iter()
        .enumerate()
    {
        let placement = if pin {
            Placement::Fixed(index)
        } else {
            Placement::Unbound
        };
        let config = Arc::clone(&config);
        let directory = Arc::clone(&directory);
        let ready = ready_tx.clone();
        let core_tls = tls.as_ref().map(|tls| tls.for_core(index));
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("corecast-core-{index}"))
            .io_memory(config.node.io_memory_bytes)
            .spawn(move || async move {
                run_core(CoreId(index), config, directory, endpoints, core_tls, ready).await;
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
    let rtmps = if config.rtmps.enabled {
        config.rtmps.listen.to_string()
    } else {
        "off".to_owned()
    };
    info!(
        listen = %config.rtmp.listen,
        %rtmps,
        cores,
        pinned = pin,
        "corecast ready"
    );
    for handle in handles {
        handle.join().map_err(|e| anyhow!("core stopped: {e}"))?;
    }
    Ok(())
}

async fn run_core(
    id: CoreId,
    config: Arc<Config>,
    directory: Arc<Directory>,
    endpoints: MeshEndpoints,
    tls: Option<CoreTlsSetup>,
    ready: mpsc::Sender<Result<SocketAddr, String>>,
) {
    let listener = match TcpListener::bind(config.rtmp.listen) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "core {}: cannot listen on {}: {e}",
                id.0, config.rtmp.listen
            )));
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
    let ctx = CoreContext::new(id, Arc::clone(&config), directory, links);
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
    if let Some(tls) = tls {
        if let Err(message) = crate::tls::start_core(Rc::clone(&ctx), tls) {
            let _ = ready.send(Err(message));
            return;
        }
    }
    let local = listener.local_addr().unwrap_or(config.rtmp.listen);
    let _ = ready.send(Ok(local));
    accept_loop(ctx, listener).await;
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
