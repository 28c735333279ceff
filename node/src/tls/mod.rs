//! RTMPS: RTMP over TLS, terminated in the node with rustls (ring provider, TLS 1.2 and 1.3).
//!
//! Every core binds the `[rtmps]` address (SO_REUSEPORT, like the RTMP listener), accepts
//! through the one accept path (`accept`: PROXY header, per-address limits), takes a TLS
//! handshake token for the client address (`limits.tls_handshakes_per_second_per_address`),
//! runs the TLS handshake of each accepted connection under `rtmps.handshake_timeout_secs`,
//! then hands the TLS pipe
//! (`corecast_transport::TlsStream`, server side; `transport.rs` makes it a session
//! `Transport`) to the one `session::run_connection`: publish over RTMPS and play over
//! RTMP, or the reverse, with no TLS-specific session code. A connection that fails in TLS
//! (plaintext RTMP on this port, an aborted or stalled handshake) is closed alone, with a
//! `reason=` of [`TlsError::as_str`].
//!
//! # Certificate reload
//! Each core holds its current `Arc<ServerConfig>`; a new connection takes a clone of it, so a
//! reload only changes what *new* connections present, and established ones keep theirs. A
//! per-core task wakes every second: it reloads when SIGHUP has set the core's flag
//! (`signal-hook`, one flag per core, registered before the cores start), and every
//! `reload_check_secs` it compares the files' stamps (inode, size, mtime) with the last ones
//! seen. A file that fails to load is logged and the previous certificate stays; its stamps are
//! remembered, so the error is logged once per change rather than every check.
//!
//! Cores reload independently (no cross-core state on this path); they converge within one
//! check interval.

mod certs;
#[cfg(test)]
mod tests;
mod transport;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_transport::TlsStream;
use glommio::net::{TcpListener, TcpStream};
use glommio::Task;
use rustls::ServerConfig;
use tracing::{debug, error, info, warn};

pub use certs::{leaf_not_after, load_server_config, server_config, CertError};
pub use corecast_transport::TlsError;

use crate::accept::{accept_loop as accept_loop_with, AcceptSettings, ConnectionKind};
use crate::config::{Config, RtmpsConfig};
use crate::core::CoreContext;
use crate::session::run_connection;
use certs::CertStamps;

/// How often a core looks at its SIGHUP flag.
const SIGNAL_CHECK: Duration = Duration::from_secs(1);

/// What the node prepares for RTMPS before the cores start: the first certificate (so a bad
/// file is a start-up error) and the SIGHUP flags.
pub struct NodeTls {
    server: Arc<ServerConfig>,
    /// The first certificate's expiry, Unix seconds (for its metric).
    not_after: Option<i64>,
    stamps: CertStamps,
    sighup: Vec<Arc<AtomicBool>>,
}

/// One core's share of [`NodeTls`]; sent to the core's executor.
pub struct CoreTlsSetup {
    server: Arc<ServerConfig>,
    stamps: CertStamps,
    sighup: Arc<AtomicBool>,
}

impl NodeTls {
    /// Loads the certificate and registers SIGHUP for `cores` cores; None when RTMPS is off.
    pub fn prepare(config: &Config, cores: usize) -> anyhow::Result<Option<NodeTls>> {
        let rtmps = &config.rtmps;
        if !rtmps.enabled {
            return Ok(None);
        }
        let stamps = CertStamps::read(rtmps);
        let loaded = certs::load(rtmps).map_err(|e| anyhow::anyhow!("rtmps: {e}"))?;
        let mut sighup = Vec::with_capacity(cores);
        for _ in 0..cores {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&flag))
                .map_err(|e| anyhow::anyhow!("rtmps: cannot handle SIGHUP: {e}"))?;
            sighup.push(flag);
        }
        Ok(Some(NodeTls {
            server: loaded.server,
            not_after: loaded.not_after,
            stamps,
            sighup,
        }))
    }

    /// When the certificate loaded at start-up expires, Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        self.not_after
    }

    /// Core `index`'s share.
    pub fn for_core(&self, index: usize) -> CoreTlsSetup {
        CoreTlsSetup {
            server: Arc::clone(&self.server),
            stamps: self.stamps.clone(),
            sighup: Arc::clone(&self.sighup[index % self.sighup.len()]),
        }
    }
}

/// A core's current server certificate: what new connections use, replaced on reload. The
/// pull server (`cluster.pull_tls`) reads it too.
pub type CurrentServerConfig = Rc<RefCell<Arc<ServerConfig>>>;

/// One core's RTMPS state.
struct CoreTls {
    /// What new connections use; replaced on reload.
    server: CurrentServerConfig,
    /// The files' stamps when last loaded (or last tried).
    stamps: RefCell<CertStamps>,
    sighup: Arc<AtomicBool>,
}

/// Starts this core's RTMPS accept tasks (one per listener: `rtmps.listen` may name several
/// addresses) and its reload task; returns the accept tasks, which the core drops to stop
/// accepting when it drains, and the core's current certificate.
pub fn start_core(
    ctx: Rc<CoreContext>,
    setup: CoreTlsSetup,
    listeners: Vec<TcpListener>,
) -> (Vec<Task<()>>, CurrentServerConfig) {
    let tls = Rc::new(CoreTls {
        server: Rc::new(RefCell::new(setup.server)),
        stamps: RefCell::new(setup.stamps),
        sighup: setup.sighup,
    });
    glommio::spawn_local(reload_loop(Rc::clone(&ctx), Rc::clone(&tls))).detach();
    let current = Rc::clone(&tls.server);
    let tasks = listeners
        .into_iter()
        .map(|listener| {
            glommio::spawn_local(accept_loop(Rc::clone(&ctx), listener, Rc::clone(&tls)))
        })
        .collect();
    (tasks, current)
}

async fn accept_loop(ctx: Rc<CoreContext>, listener: TcpListener, tls: Rc<CoreTls>) {
    let settings = AcceptSettings {
        kind: ConnectionKind::Rtmps,
        max_per_core: ctx.config().rtmp.max_connections_per_core,
        nodelay: true,
    };
    let timeout = Duration::from_secs(ctx.config().rtmps.handshake_timeout_secs);
    let serve_ctx = Rc::clone(&ctx);
    accept_loop_with(ctx, listener, settings, move |stream, peer, permit| {
        // The certificate as of the accept: a reload affects new connections only.
        let server = Arc::clone(&tls.server.borrow());
        let ctx = Rc::clone(&serve_ctx);
        async move {
            serve(ctx, stream, peer, server, timeout).await;
            drop(permit);
        }
    })
    .await;
}

/// TLS handshake, then the ordinary RTMP session over the TLS pipe.
async fn serve(
    ctx: Rc<CoreContext>,
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<ServerConfig>,
    timeout: Duration,
) {
    // A handshake costs the node far more than the client: each address has a rate.
    if !crate::accept::admit_tls(&ctx, ConnectionKind::Rtmps.as_str(), peer) {
        return;
    }
    let error = match TlsStream::server(stream, server) {
        Ok(transport) => match transport.handshake(timeout).await {
            Ok(()) => {
                debug!(core = ctx.id.0, %peer, tls = %transport.describe(), "tls handshake done");
                run_connection(ctx, transport, peer).await;
                return;
            }
            Err(e @ TlsError::HandshakeTimeout(_)) => e,
            Err(e) => {
                transport.shutdown();
                e
            }
        },
        Err(e) => e,
    };
    ctx.metrics.closed(error.as_str());
    if !matches!(error, TlsError::Io(_)) {
        ctx.metrics.error(error.as_str());
    }
    warn!(core = ctx.id.0, %peer, reason = error.as_str(), error = %error, "tls connection closed");
}

/// Reloads the certificate on SIGHUP or when the files change.
async fn reload_loop(ctx: Rc<CoreContext>, tls: Rc<CoreTls>) {
    let config: &RtmpsConfig = &ctx.config().rtmps;
    let check_every = Duration::from_secs(config.reload_check_secs);
    let mut last_check = Instant::now();
    loop {
        glommio::timer::sleep(SIGNAL_CHECK).await;
        let signalled = tls.sighup.swap(false, Ordering::Relaxed);
        let mut changed = false;
        if !check_every.is_zero() && last_check.elapsed() >= check_every {
            last_check = Instant::now();
            let stamps = CertStamps::read(config);
            changed = stamps != *tls.stamps.borrow();
        }
        if !(signalled || changed) {
            continue;
        }
        let trigger = if signalled { "sighup" } else { "file_change" };
        // Stamps first: a file replaced while it is read is seen as changed again next time.
        *tls.stamps.borrow_mut() = CertStamps::read(config);
        match certs::load(config) {
            Ok(loaded) => {
                *tls.server.borrow_mut() = loaded.server;
                if let Some(not_after) = loaded.not_after {
                    ctx.shared.metrics.certificate_expiry(ctx.id.0, not_after);
                }
                info!(core = ctx.id.0, trigger, "tls certificate reloaded");
            }
            Err(e) => {
                error!(
                    core = ctx.id.0,
                    trigger,
                    error = %e,
                    "tls certificate reload failed; keeping the previous certificate"
                );
            }
        }
    }
}
