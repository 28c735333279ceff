//! A small RTMP source for the pull-in tests that sends its media in aggregate messages
//! (type 22), as Wowza, Red5 and FMS do and nginx-rtmp and ffmpeg never do.
//!
//! Built from the project's own sans-IO server pieces (`ServerHandshake`, the chunk codec,
//! commands): it answers `connect`, `createStream` and `play` like a server, then plays an FLV
//! file in a loop at its own pace, [`GROUP`] tags per aggregate, timestamps running on across
//! loops. One thread per connection; every read has a deadline; dropped = stopped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corecast_common::amf0::Amf0Value;
use corecast_common::chunk::{ChunkDecoder, ChunkEncoder};
use corecast_common::client::aggregate;
use corecast_common::command::{status_info, Command};
use corecast_common::control::{ControlMessage, UserControlEvent};
use corecast_common::flv::FlvReader;
use corecast_common::handshake::{HandshakeStatus, ServerHandshake};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

/// Tags per aggregate.
pub const GROUP: usize = 4;

/// A running source; stops when dropped.
pub struct AggregateSource {
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Aggregates sent, all connections.
    pub aggregates: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl AggregateSource {
    /// Serves `file` (an FLV) to players on a free port.
    pub fn start(file: &Path) -> AggregateSource {
        AggregateSource::spawn(file, None)
    }

    /// Like [`start`](Self::start), but the aggregate after the first `good` ones on each
    /// connection is malformed (its last back pointer cut off).
    pub fn start_corrupt(file: &Path, good: u64) -> AggregateSource {
        AggregateSource::spawn(file, Some(good))
    }

    fn spawn(file: &Path, corrupt_after: Option<u64>) -> AggregateSource {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the source");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let aggregates = Arc::new(AtomicU64::new(0));
        let (flag, count, file) = (Arc::clone(&stop), Arc::clone(&aggregates), file.to_owned());
        let thread =
            std::thread::spawn(move || accept(listener, &file, &flag, &count, corrupt_after));
        AggregateSource {
            port,
            stop,
            aggregates,
            thread: Some(thread),
        }
    }
}

impl Drop for AggregateSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept(
    listener: TcpListener,
    file: &Path,
    stop: &Arc<AtomicBool>,
    count: &Arc<AtomicU64>,
    corrupt_after: Option<u64>,
) {
    let mut serving = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (stop, count, file) = (Arc::clone(stop), Arc::clone(count), file.to_owned());
                serving.push(std::thread::spawn(move || {
                    let _ = serve(conn, &file, &stop, &count, corrupt_after);
                }));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    for thread in serving {
        let _ = thread.join();
    }
}

type Io<T> = std::io::Result<T>;

fn broken(what: &str) -> std::io::Error {
    std::io::Error::other(what.to_owned())
}

/// One player: the setup, then the file in aggregates until it leaves or the source stops.
fn serve(
    mut conn: TcpStream,
    file: &Path,
    stop: &AtomicBool,
    count: &AtomicU64,
    corrupt_after: Option<u64>,
) -> Io<()> {
    conn.set_read_timeout(Some(Duration::from_millis(100)))?;
    // A player that stops reading ends its connection instead of holding the thread.
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    conn.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    let mut handshake = ServerHandshake::new(0, &[7; 64]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = handshake
            .handle_input(&mut buf)
            .map_err(|_| broken("handshake"))?;
        if let Some(out) = handshake.poll_output() {
            conn.write_all(&out)?;
        }
        if status == HandshakeStatus::Done {
            break;
        }
        read_more(&mut conn, &mut buf, stop, deadline)?;
    }
    let mut decoder = ChunkDecoder::default();
    let mut encoder = ChunkEncoder::new();
    let mut out = BytesMut::new();
    loop {
        let message = decoder.decode(&mut buf).map_err(|_| broken("chunks"))?;
        let Some(message) = message else {
            read_more(&mut conn, &mut buf, stop, deadline)?;
            continue;
        };
        if message.message_type != MessageType::COMMAND_AMF0 {
            continue;
        }
        let command = Command::decode(message.message_type, &message.payload)
            .map_err(|_| broken("command"))?;
        let txn = command.transaction_id;
        match command.name.as_str() {
            "connect" => {
                for control in [
                    ControlMessage::WindowAckSize(5_000_000),
                    ControlMessage::SetChunkSize(4096),
                ] {
                    encoder.encode(&control.to_message(), &mut out);
                }
                let info = status_info("status", "NetConnection.Connect.Success", "ok");
                reply(
                    &mut encoder,
                    &mut out,
                    0,
                    Command::result(txn, Amf0Value::Null, vec![Amf0Value::Object(info)]),
                );
            }
            "createStream" => {
                reply(
                    &mut encoder,
                    &mut out,
                    0,
                    Command::result(txn, Amf0Value::Null, vec![1.0.into()]),
                );
            }
            "play" => {
                let begin =
                    ControlMessage::UserControl(UserControlEvent::StreamBegin(MessageStreamId(1)));
                encoder.encode(&begin.to_message(), &mut out);
                let start = status_info("status", "NetStream.Play.Start", "playing");
                reply(&mut encoder, &mut out, 1, Command::on_status(start));
                conn.write_all(&out.split())?;
                return play(conn, file, stop, count, encoder, corrupt_after);
            }
            _ => {}
        }
        conn.write_all(&out.split())?;
    }
}

fn reply(encoder: &mut ChunkEncoder, out: &mut BytesMut, stream: u32, command: Command) {
    let message = RtmpMessage {
        chunk_stream_id: ChunkStreamId::COMMAND,
        timestamp: 0,
        message_type: MessageType::COMMAND_AMF0,
        message_stream_id: MessageStreamId(stream),
        payload: command.encode(),
    };
    encoder.encode(&message, out);
}

fn read_more(
    conn: &mut TcpStream,
    buf: &mut BytesMut,
    stop: &AtomicBool,
    deadline: Instant,
) -> Io<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return Err(broken("stopped or timed out"));
        }
        match conn.read(&mut chunk) {
            Ok(0) => return Err(broken("closed")),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The file's tags as messages on stream 1.
fn messages(file: &Path) -> Vec<RtmpMessage> {
    let mut buf = BytesMut::from(&std::fs::read(file).expect("read the source file")[..]);
    let mut reader = FlvReader::new();
    let mut all = Vec::new();
    while let Some(tag) = reader.decode(&mut buf).expect("an FLV file") {
        all.push(RtmpMessage {
            chunk_stream_id: ChunkStreamId::VIDEO,
            timestamp: tag.timestamp,
            message_type: MessageType(tag.tag_type),
            message_stream_id: MessageStreamId(1),
            payload: tag.data,
        });
    }
    all
}

/// Sends the file in aggregates, in a loop, at the pace of its timestamps.
fn play(
    mut conn: TcpStream,
    file: &Path,
    stop: &AtomicBool,
    count: &AtomicU64,
    mut encoder: ChunkEncoder,
    corrupt_after: Option<u64>,
) -> Io<()> {
    let tags = messages(file);
    let length = tags.last().map_or(0, |t| t.timestamp) + 40;
    let started = Instant::now();
    let mut out = BytesMut::new();
    let mut sent = 0u64;
    for round in 0u32.. {
        // The metadata and sequence headers once; media on every round, time running on.
        let skip = if round == 0 {
            0
        } else {
            tags.iter()
                .position(|t| {
                    t.message_type == MessageType::VIDEO
                        && t.payload.first() == Some(&0x17)
                        && t.payload.get(1) == Some(&1)
                })
                .unwrap_or(0)
        };
        for group in tags[skip..].chunks(GROUP) {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let shifted: Vec<RtmpMessage> = group
                .iter()
                .filter(|m| round == 0 || m.message_type != MessageType::DATA_AMF0)
                .map(|m| RtmpMessage {
                    timestamp: m.timestamp + round * length,
                    ..m.clone()
                })
                .collect();
            let Some(mut message) = aggregate::message(&shifted, MessageStreamId(1)) else {
                continue;
            };
            if corrupt_after == Some(sent) {
                message.payload.truncate(message.payload.len() - 1);
            }
            sent += 1;
            let due = started + Duration::from_millis(u64::from(message.timestamp));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            encoder.encode(&message, &mut out);
            conn.write_all(&out.split())?;
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
