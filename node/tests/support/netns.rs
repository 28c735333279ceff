//! Hosts for multi-host tests: network namespaces the test creates (`ip netns`), one per
//! host, joined by veth links to a bridge in a namespace of its own, so nothing outside the
//! test's namespaces changes. A host runs processes (`ip netns exec`), threads (`setns` on
//! the thread: its sockets live in the host), nftables rules, and a delaying TCP relay.
//! Everything is deleted when the [`Lan`] is dropped.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::process::output_with_deadline;

const IP_LIMIT: Duration = Duration::from_secs(20);

/// Runs `ip args`, returning its output or why it failed.
fn ip(args: &[&str]) -> Result<Output, String> {
    let out = output_with_deadline(Command::new("ip").args(args), IP_LIMIT);
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One host: a network namespace with one address on the LAN.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its namespace's name.
    pub netns: String,
    /// Its address on the LAN.
    pub addr: Ipv4Addr,
}

impl Host {
    /// The command prefix that runs a program in this host: `ip netns exec NAME`.
    pub fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.netns]
    }

    /// `program` run in this host.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]);
        command
    }

    /// Runs `f` on a thread that lives in this host's namespace (its sockets are the host's;
    /// threads it starts are in the host too) and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in a host")
    }

    /// Starts `f` on a thread in this host's namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.netns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("the host's namespace");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the host");
            f()
        })
    }

    /// Loads an nftables ruleset (`nft -f -`) in this host.
    pub fn nft(&self, ruleset: &str) -> Result<(), String> {
        let path = std::env::temp_dir().join(format!("{}-{}.nft", self.netns, std::process::id()));
        std::fs::write(&path, ruleset).map_err(|e| e.to_string())?;
        let out = output_with_deadline(self.command("nft").arg("-f").arg(&path), IP_LIMIT);
        let _ = std::fs::remove_file(&path);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

/// Hosts on one Ethernet segment, 10.77.0.0/24.
pub struct Lan {
    switch: String,
    hosts: Vec<(String, Host)>,
}

impl Lan {
    /// Creates `labels.len()` hosts; host i gets 10.77.0.(10 + i). Fails (with what `ip`
    /// said) where namespaces cannot be made: not root, no `ip`.
    pub fn new(labels: &[&str]) -> Result<Lan, String> {
        // Names unique to this test process, short enough for interface names (15 bytes).
        let tag = format!("c{:x}", std::process::id() & 0xfffff);
        let switch = format!("{tag}sw");
        ip(&["netns", "add", &switch])?;
        let mut lan = Lan {
            switch,
            hosts: Vec::new(),
        };
        ip(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.switch, "link", "set", "br0", "up"])?;
        for (i, label) in labels.iter().enumerate() {
            let netns = format!("{tag}h{i}");
            ip(&["netns", "add", &netns])?;
            let addr = Ipv4Addr::new(10, 77, 0, 10 + i as u8);
            lan.hosts.push((
                label.to_string(),
                Host {
                    netns: netns.clone(),
                    addr,
                },
            ));
            let (inside, outside) = (format!("{tag}i{i}"), format!("{tag}o{i}"));
            ip(&[
                "link",
                "add",
                "name",
                &inside,
                "netns",
                &netns,
                "type",
                "veth",
                "peer",
                "name",
                &outside,
                "netns",
                &lan.switch,
            ])?;
            ip(&[
                "-n",
                &lan.switch,
                "link",
                "set",
                &outside,
                "master",
                "br0",
                "up",
            ])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &netns, "link", "set", &inside, "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    /// The host with `label`.
    pub fn host(&self, label: &str) -> &Host {
        self.hosts
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, h)| h)
            .unwrap_or_else(|| panic!("no host {label}"))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth ends (and their peers) with it.
        for (_, host) in &self.hosts {
            let _ = ip(&["netns", "del", &host.netns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// A TCP relay that delays every byte by a fixed time each way: a long link's latency,
/// made in user space (this kernel has no `netem`). Listens on 127.0.0.1 in the host it was
/// started in; stops accepting when dropped (open connections end with their peers).
pub struct DelayRelay {
    /// Where to connect to be relayed.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DelayRelay {
    /// Starts relaying to `target` from `host`, `delay` each way.
    pub fn start(host: &Host, target: SocketAddr, delay: Duration) -> DelayRelay {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = host.run(|| TcpListener::bind("127.0.0.1:0").expect("relay bind"));
        let addr = listener.local_addr().expect("relay address");
        listener.set_nonblocking(true).expect("nonblocking");
        let stopping = Arc::clone(&stop);
        host.spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        // This thread is in the host: so is the upstream connection.
                        let Ok(upstream) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        pipe(&client, &upstream, delay);
                        pipe(&upstream, &client, delay);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        DelayRelay { addr, stop }
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, on two threads.
fn pipe(from: &TcpStream, to: &TcpStream, delay: Duration) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let queue = Arc::new((
        Mutex::new((VecDeque::<(Instant, Vec<u8>)>::new(), false)),
        Condvar::new(),
    ));
    let reader_queue = Arc::clone(&queue);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let (lock, ready) = &*reader_queue;
            let mut state = lock.lock().expect("relay queue");
            if n == 0 {
                state.1 = true;
                ready.notify_one();
                return;
            }
            state
                .0
                .push_back((Instant::now() + delay, buf[..n].to_vec()));
            ready.notify_one();
        }
    });
    std::thread::spawn(move || loop {
        let (lock, ready) = &*queue;
        let mut state = lock.lock().expect("relay queue");
        while state.0.is_empty() && !state.1 {
            state = ready.wait(state).expect("relay queue");
        }
        let Some((due, chunk)) = state.0.pop_front() else {
            let _ = to.shutdown(std::net::Shutdown::Write);
            return;
        };
        drop(state);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if to.write_all(&chunk).is_err() {
            return;
        }
    });
}
