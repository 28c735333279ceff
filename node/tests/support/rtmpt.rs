//! A small blocking RTMPT client for tests: raw HTTP/1.1 connections (responses parsed with
//! httparse), and an RTMP client whose every request may go over a different connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits, ChunkEncoder};
use corecast_common::command::{client, Command};
use corecast_common::handshake::{ClientHandshake, HandshakeKind, HandshakeStatus};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

use super::client::status_code;
use super::node::{free_port, Node};

/// A node with RTMPT on; returns it and its RTMPT address.
pub fn start_node(cores: usize, extra_config: &str, dir: &Path) -> (Node, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = format!("[rtmpt]\nenabled = true\nlisten = \"{addr}\"\n{extra_config}");
    (Node::start(cores, &config, dir), addr)
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive HTTP connection.
pub struct HttpConn {
    /// The socket (tests may write raw bytes).
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    /// Connects.
    pub fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let stream = super::process::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::new(),
        })
    }

    /// An HTTP connection over a stream the test connected itself (from another source
    /// address, say).
    pub fn from_stream(stream: TcpStream) -> io::Result<HttpConn> {
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::new(),
        })
    }

    /// The local port (how the node's log names this connection).
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Writes a POST without reading the reply.
    pub fn post_only(&mut self, path: &str, body: &[u8]) -> io::Result<()> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-fcs\r\n\
             Connection: Keep-Alive\r\nCache-Control: no-cache\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request)
    }

    /// POSTs and reads the reply.
    pub fn post(&mut self, path: &str, body: &[u8]) -> io::Result<Response> {
        self.post_only(path, body)?;
        self.read_response(Duration::from_secs(10))
    }

    /// Reads one response.
    pub fn read_response(&mut self, limit: Duration) -> io::Result<Response> {
        let deadline = Instant::now() + limit;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            let status = parsed
                .parse(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if let httparse::Status::Complete(head_len) = status {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let code = parsed.code.unwrap_or(0);
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .ok_or_else(|| io::Error::other("response without Content-Length"))?;
                if self.buf.len() >= head_len + length {
                    let body = self.buf[head_len..head_len + length].to_vec();
                    self.buf.drain(..head_len + length);
                    return Ok(Response {
                        status: code,
                        headers,
                        body,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no whole response"));
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            let mut tmp = [0u8; 65536];
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "node closed the connection",
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

/// `POST /open/1`; returns the tunnel id.
pub fn open(conn: &mut HttpConn) -> io::Result<String> {
    let reply = conn.post("/open/1", b"\0")?;
    if reply.status != 200 {
        return Err(io::Error::other(format!("open answered {}", reply.status)));
    }
    Ok(String::from_utf8_lossy(&reply.body).trim().to_owned())
}

/// An RTMP client over one tunnel; request i goes over connection i % n.
pub struct TunnelClient {
    /// The connections, used in turn.
    pub conns: Vec<HttpConn>,
    /// The tunnel id.
    pub id: String,
    /// The next sequence number.
    pub seq: u64,
    turn: usize,
    buf: BytesMut,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    next_transaction: f64,
}

impl TunnelClient {
    /// Opens a tunnel over `conns[0]`.
    pub fn open(mut conns: Vec<HttpConn>) -> io::Result<TunnelClient> {
        let id = open(&mut conns[0])?;
        Ok(TunnelClient {
            conns,
            id,
            seq: 0,
            turn: 0,
            buf: BytesMut::new(),
            decoder: ChunkDecoder::new(ChunkDecoderLimits::default()),
            encoder: ChunkEncoder::new(),
            next_transaction: 1.0,
        })
    }

    /// One request (`send`, `idle` or `close`) on the next connection; returns the reply
    /// body after checking its status and interval byte, and keeps its data.
    pub fn request(&mut self, kind: &str, body: &[u8]) -> io::Result<Vec<u8>> {
        let path = format!("/{kind}/{}/{}", self.id, self.seq);
        self.seq += 1;
        let conn = self.turn % self.conns.len();
        self.turn += 1;
        let reply = self.conns[conn].post(&path, body)?;
        if reply.status != 200 {
            return Err(io::Error::other(format!(
                "{path} answered {}",
                reply.status
            )));
        }
        if reply.header("content-type") != Some("application/x-fcs") {
            return Err(io::Error::other("reply is not application/x-fcs"));
        }
        let Some((&interval, data)) = reply.body.split_first() else {
            return Err(io::Error::other("reply without the polling-interval byte"));
        };
        if !(0x00..=0x21).contains(&interval) {
            return Err(io::Error::other(format!("polling interval {interval:#x}")));
        }
        self.buf.extend_from_slice(data);
        Ok(reply.body)
    }

    /// Polls (`/idle`) until `want` bytes are buffered.
    fn fill_to(&mut self, want: usize, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        while self.buf.len() < want {
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "not enough bytes"));
            }
            self.request("idle", b"\0")?;
        }
        Ok(())
    }

    /// The RTMP handshake through the tunnel.
    pub fn handshake(&mut self) -> io::Result<()> {
        let random = [9u8; 2 * corecast_common::handshake::HANDSHAKE_SIZE];
        let mut hs = ClientHandshake::new(HandshakeKind::Digest, 0, &random);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut out = Vec::new();
            while let Some(bytes) = hs.poll_output() {
                out.extend_from_slice(&bytes);
            }
            let status = hs
                .handle_input(&mut self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            while let Some(bytes) = hs.poll_output() {
                out.extend_from_slice(&bytes);
            }
            if !out.is_empty() {
                self.request("send", &out)?;
            }
            if status == HandshakeStatus::Done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake"));
            }
            if out.is_empty() {
                self.fill_to(self.buf.len() + 1, Duration::from_secs(10))?;
            }
        }
    }

    /// Handshake and `connect` to `app`; returns once `_result` arrives.
    pub fn connect(&mut self, app: &str) -> io::Result<()> {
        self.handshake()?;
        let tx = self.transaction();
        self.send_command(
            MessageStreamId::CONNECTION,
            &client::connect(tx, app, &format!("rtmpt://test/{app}")),
        )?;
        let reply = self.wait_command(Duration::from_secs(10), |c| c.transaction_id == tx)?;
        if reply.name != "_result" {
            return Err(io::Error::other(format!("connect answered {}", reply.name)));
        }
        Ok(())
    }

    /// createStream then play `name`; returns once NetStream.Play.Start arrives.
    pub fn play(&mut self, name: &str) -> io::Result<()> {
        let tx = self.transaction();
        self.send_command(MessageStreamId::CONNECTION, &client::create_stream(tx))?;
        self.wait_command(Duration::from_secs(10), |c| c.transaction_id == tx)?;
        let tx = self.transaction();
        self.send_command(MessageStreamId::MEDIA, &client::play(tx, name))?;
        self.wait_command(Duration::from_secs(10), |c| {
            c.name == "onStatus" && status_code(c).as_deref() == Some("NetStream.Play.Start")
        })?;
        Ok(())
    }

    fn transaction(&mut self) -> f64 {
        let t = self.next_transaction;
        self.next_transaction += 1.0;
        t
    }

    /// Sends a command in one `/send`.
    pub fn send_command(&mut self, stream: MessageStreamId, command: &Command) -> io::Result<()> {
        let mut out = BytesMut::new();
        self.encoder.encode(
            &RtmpMessage {
                chunk_stream_id: ChunkStreamId::COMMAND,
                timestamp: 0,
                message_type: MessageType::COMMAND_AMF0,
                message_stream_id: stream,
                payload: command.encode(),
            },
            &mut out,
        );
        self.request("send", &out)?;
        Ok(())
    }

    /// Polls until a command matching `pred` arrives, skipping everything else.
    pub fn wait_command(
        &mut self,
        limit: Duration,
        pred: impl Fn(&Command) -> bool,
    ) -> io::Result<Command> {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(m) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                if m.message_type == MessageType::COMMAND_AMF0 {
                    let cmd = Command::decode(m.message_type, &m.payload)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    if pred(&cmd) {
                        return Ok(cmd);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no matching command",
                ));
            }
            self.request("idle", b"\0")?;
        }
    }
}
