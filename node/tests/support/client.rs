//! A small blocking RTMP client built on `corecast-common`, for tests that need to stay
//! connected through events real tools end on (unpublish) or to send crafted bytes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corecast_common::amf0::{Amf0Object, Amf0Value};
use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits, ChunkEncoder};
use corecast_common::command::{client, Command};
use corecast_common::handshake::{ClientHandshake, HandshakeKind, HandshakeStatus};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

/// A connected RTMP client.
pub struct RtmpClient {
    /// The socket (tests may write raw bytes to it).
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    next_transaction: f64,
}

impl RtmpClient {
    /// TCP connect and handshake only.
    pub fn handshake(addr: SocketAddr) -> io::Result<RtmpClient> {
        Self::handshake_on(super::process::connect(addr)?)
    }

    /// Handshake and `connect` from the local address `from` (another loopback address, so
    /// that the node sees another client address).
    pub fn connect_from(
        from: std::net::IpAddr,
        addr: SocketAddr,
        app: &str,
    ) -> io::Result<RtmpClient> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
        Self::connect_over(
            Self::handshake_on(socket.into())?,
            addr,
            app,
            Amf0Object::new(),
        )
        .map(|(c, _)| c)
    }

    /// The handshake on a stream connected already (from a chosen local address, say).
    pub fn handshake_on(stream: TcpStream) -> io::Result<RtmpClient> {
        stream.set_nodelay(true)?;
        let mut c = RtmpClient {
            stream,
            buf: BytesMut::new(),
            decoder: ChunkDecoder::new(ChunkDecoderLimits::default()),
            encoder: ChunkEncoder::new(),
            next_transaction: 1.0,
        };
        let random = [7u8; 2 * corecast_common::handshake::HANDSHAKE_SIZE];
        let mut hs = ClientHandshake::new(HandshakeKind::Digest, 0, &random);
        loop {
            while let Some(out) = hs.poll_output() {
                c.stream.write_all(&out)?;
            }
            if hs
                .handle_input(&mut c.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                == HandshakeStatus::Done
            {
                while let Some(out) = hs.poll_output() {
                    c.stream.write_all(&out)?;
                }
                return Ok(c);
            }
            c.fill(Duration::from_secs(5))?;
        }
    }

    /// A client of `app` that publishes `name`, asserting the node started the publish.
    pub fn publishing(addr: SocketAddr, app: &str, name: &str) -> RtmpClient {
        let mut c = Self::connect(addr, app).expect("publisher connects");
        assert_eq!(
            c.publish(name).expect("publish"),
            "NetStream.Publish.Start",
            "publish {name}"
        );
        c
    }

    /// A client of `app` that plays `name` (NetStream.Play.Start arrived).
    pub fn playing(addr: SocketAddr, app: &str, name: &str) -> RtmpClient {
        let mut c = Self::connect(addr, app).expect("player connects");
        c.play(name).expect("play");
        c
    }

    /// Handshake and `connect` to `app`; returns once `_result` arrives.
    pub fn connect(addr: SocketAddr, app: &str) -> io::Result<RtmpClient> {
        Self::connect_with(addr, app, Amf0Object::new()).map(|(c, _)| c)
    }

    /// As [`RtmpClient::connect`], with the tcUrl given (a query string on it, say).
    pub fn connect_tc_url(addr: SocketAddr, app: &str, tc_url: &str) -> io::Result<RtmpClient> {
        Self::connect_full(addr, app, tc_url, Amf0Object::new()).map(|(c, _)| c)
    }

    /// Handshake and `connect` to `app` with `extra` properties in the command object
    /// (Enhanced RTMP capabilities, say); returns the client and the `_result`.
    pub fn connect_with(
        addr: SocketAddr,
        app: &str,
        extra: Amf0Object,
    ) -> io::Result<(RtmpClient, Command)> {
        Self::connect_over(Self::handshake(addr)?, addr, app, extra)
    }

    fn connect_over(
        c: RtmpClient,
        addr: SocketAddr,
        app: &str,
        extra: Amf0Object,
    ) -> io::Result<(RtmpClient, Command)> {
        Self::connect_full_over(c, app, &format!("rtmp://{addr}/{app}"), extra)
    }

    /// `connect` with this tcUrl and `extra` properties; the client and the `_result`.
    fn connect_full(
        addr: SocketAddr,
        app: &str,
        tc_url: &str,
        extra: Amf0Object,
    ) -> io::Result<(RtmpClient, Command)> {
        Self::connect_full_over(Self::handshake(addr)?, app, tc_url, extra)
    }

    fn connect_full_over(
        mut c: RtmpClient,
        app: &str,
        tc_url: &str,
        extra: Amf0Object,
    ) -> io::Result<(RtmpClient, Command)> {
        let tx = c.transaction();
        let mut connect = client::connect(tx, app, tc_url);
        if let Amf0Value::Object(object) = &mut connect.command_object {
            object.0.extend(extra.0);
        }
        c.send_command(MessageStreamId::CONNECTION, &connect)?;
        let reply = c.wait_command(Duration::from_secs(5), |cmd| cmd.transaction_id == tx)?;
        if reply.name != "_result" {
            return Err(io::Error::other(format!("connect answered {}", reply.name)));
        }
        Ok((c, reply))
    }

    fn transaction(&mut self) -> f64 {
        let t = self.next_transaction;
        self.next_transaction += 1.0;
        t
    }

    /// createStream then play `name`; returns once NetStream.Play.Start arrives.
    pub fn play(&mut self, name: &str) -> io::Result<()> {
        self.create_stream()?;
        let tx = self.transaction();
        self.send_command(MessageStreamId::MEDIA, &client::play(tx, name))?;
        self.wait_status(Duration::from_secs(5), "NetStream.Play.Start")?;
        Ok(())
    }

    /// createStream then play `name`; returns the first status code the node answered.
    pub fn play_status(&mut self, name: &str) -> io::Result<String> {
        self.create_stream()?;
        let tx = self.transaction();
        self.send_command(MessageStreamId::MEDIA, &client::play(tx, name))?;
        let status = self.wait_command(Duration::from_secs(5), |c| c.name == "onStatus")?;
        Ok(status_code(&status).unwrap_or_default())
    }

    /// createStream then publish `name`; returns the status code the node answered.
    pub fn publish(&mut self, name: &str) -> io::Result<String> {
        self.create_stream()?;
        let tx = self.transaction();
        self.send_command(MessageStreamId::MEDIA, &client::publish(tx, name))?;
        let status = self.wait_command(Duration::from_secs(5), |c| c.name == "onStatus")?;
        Ok(status_code(&status).unwrap_or_default())
    }

    fn create_stream(&mut self) -> io::Result<()> {
        let tx = self.transaction();
        self.send_command(MessageStreamId::CONNECTION, &client::create_stream(tx))?;
        self.wait_command(Duration::from_secs(5), |c| c.transaction_id == tx)?;
        Ok(())
    }

    /// Sends one audio/video message on stream 1.
    pub fn send_media(
        &mut self,
        message_type: MessageType,
        timestamp: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let csid = if message_type == MessageType::AUDIO {
            4
        } else {
            6
        };
        self.send(&RtmpMessage {
            chunk_stream_id: ChunkStreamId(csid),
            timestamp,
            message_type,
            message_stream_id: MessageStreamId::MEDIA,
            payload: bytes::Bytes::copy_from_slice(payload),
        })
    }

    /// Sends a command.
    pub fn send_command(&mut self, stream: MessageStreamId, command: &Command) -> io::Result<()> {
        self.send(&RtmpMessage {
            chunk_stream_id: ChunkStreamId::COMMAND,
            timestamp: 0,
            message_type: MessageType::COMMAND_AMF0,
            message_stream_id: stream,
            payload: command.encode(),
        })
    }

    /// Encodes and writes one message.
    pub fn send(&mut self, message: &RtmpMessage) -> io::Result<()> {
        let mut out = BytesMut::new();
        self.encoder.encode(message, &mut out);
        self.stream.write_all(&out)
    }

    /// The next message, or None when `limit` passes; Err at end of stream.
    pub fn next_message(&mut self, limit: Duration) -> io::Result<Option<RtmpMessage>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(m) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                return Ok(Some(m));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match self.fill(deadline - now) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for a command matching `pred`, skipping everything else.
    pub fn wait_command(
        &mut self,
        limit: Duration,
        pred: impl Fn(&Command) -> bool,
    ) -> io::Result<Command> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let Some(m) = self.next_message(deadline - Instant::now())? else {
                break;
            };
            if m.message_type == MessageType::COMMAND_AMF0 {
                let cmd = Command::decode(m.message_type, &m.payload)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                if pred(&cmd) {
                    return Ok(cmd);
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no matching command",
        ))
    }

    /// Waits for an onStatus with `code`.
    pub fn wait_status(&mut self, limit: Duration, code: &str) -> io::Result<Command> {
        self.wait_command(limit, |c| {
            c.name == "onStatus" && status_code(c).as_deref() == Some(code)
        })
    }

    fn fill(&mut self, limit: Duration) -> io::Result<()> {
        self.stream
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))?;
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "node closed the connection",
            ));
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }
}

/// The `code` of an onStatus / _error info object.
pub fn status_code(command: &Command) -> Option<String> {
    command
        .arguments
        .iter()
        .find_map(|a| a.as_object()?.get("code")?.as_str().map(str::to_owned))
}

/// True when the peer closes `stream` (EOF or reset) within `limit`.
pub fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut tmp = [0u8; 4096];
    while Instant::now() < deadline {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        match stream.read(&mut tmp) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Reads messages until a video message with timestamp ≥ `at_ms`; panics after `limit`.
pub fn read_until_video_at(client: &mut RtmpClient, at_ms: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(m) = client
            .next_message(Duration::from_millis(500))
            .expect("player connection")
        {
            if m.message_type == MessageType::VIDEO && m.timestamp >= at_ms {
                return;
            }
        }
    }
    panic!("stream never reached {at_ms} ms");
}
