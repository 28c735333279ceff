//! Statistics for the HTTP API: each core publishes a snapshot of its streams and clients
//! once a second into its own slot of the [`StatsBoard`]; the API merges the slots.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// A published stream, as its publisher's core reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamStats {
    /// Application.
    pub app: String,
    /// Stream name.
    pub name: String,
    /// The core the publisher is on.
    pub core: usize,
    /// Where the stream comes from: a publisher here or, on an edge, an upstream.
    pub source: StreamSource,
    /// Video codec name from metadata (`videocodecid`), e.g. `h264` (see [`crate::media`]).
    pub video_codec: Option<String>,
    /// Audio codec name from metadata (`audiocodecid`), e.g. `aac`.
    pub audio_codec: Option<String>,
    /// Width in pixels from metadata.
    pub width: Option<u32>,
    /// Height in pixels from metadata.
    pub height: Option<u32>,
    /// Frame rate from metadata.
    pub frame_rate: Option<f64>,
    /// Media bits per second received over the last second.
    pub bitrate_in_bps: u64,
    /// Seconds since the publish started.
    pub uptime_secs: u64,
    /// Players per core (filled in when slots are merged).
    pub players_per_core: BTreeMap<usize, usize>,
    /// All players on the node.
    pub players: usize,
}

/// Where a stream's media comes from; serialized as `{"kind": "publisher", ...}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamSource {
    /// An RTMP publisher connected to this node.
    Publisher {
        /// Its connection id (what `/api/v1/clients` lists and kick takes).
        id: u64,
        /// Its address.
        addr: String,
    },
    /// A pull from an upstream (an edge's stream); the publisher is on the origin.
    Upstream {
        /// The upstream's `host:port`.
        upstream: String,
    },
}

/// A connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientStats {
    /// Connection id.
    pub id: u64,
    /// Core it lives on.
    pub core: usize,
    /// Peer address. Kept as the address and formatted only when the API serialises it:
    /// the snapshot is taken every second for every client (issue 19).
    pub addr: std::net::SocketAddr,
    /// `rtmp`, `rtmps`, `rtmpt`, ...
    pub transport: &'static str,
    /// `idle`, `publishing` or `playing`.
    pub role: &'static str,
    /// The stream it publishes or plays.
    pub stream: Option<String>,
    /// Seconds connected.
    pub connected_secs: u64,
    /// Bytes read from it.
    pub bytes_in: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
}

/// One core's snapshot.
#[derive(Debug, Clone, Default)]
pub struct CoreStats {
    /// Streams published on this core.
    pub published: Vec<StreamStats>,
    /// Player counts on this core, by stream key.
    pub players: BTreeMap<String, usize>,
    /// Connections on this core.
    pub clients: Vec<ClientStats>,
}

/// The slots, one per core.
#[derive(Debug, Default)]
pub struct StatsBoard {
    slots: Mutex<Vec<CoreStats>>,
}

impl StatsBoard {
    /// A board for `cores` cores.
    pub fn new(cores: usize) -> StatsBoard {
        StatsBoard {
            slots: Mutex::new(vec![CoreStats::default(); cores]),
        }
    }

    /// Replaces one core's snapshot.
    pub fn publish(&self, core: usize, stats: CoreStats) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(core) {
            *slot = stats;
        }
    }

    /// Every published stream with node-wide player counts.
    pub fn streams(&self) -> Vec<StreamStats> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut streams: Vec<StreamStats> = slots
            .iter()
            .flat_map(|s| s.published.iter().cloned())
            .collect();
        for stream in &mut streams {
            let key = format!("{}/{}", stream.app, stream.name);
            for (core, slot) in slots.iter().enumerate() {
                if let Some(n) = slot.players.get(&key).filter(|n| **n > 0) {
                    stream.players_per_core.insert(core, *n);
                }
            }
            stream.players = stream.players_per_core.values().sum();
        }
        streams.sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
        streams
    }

    /// Every connection.
    pub fn clients(&self) -> Vec<ClientStats> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut clients: Vec<ClientStats> = slots
            .iter()
            .flat_map(|s| s.clients.iter().cloned())
            .collect();
        clients.sort_by_key(|c| c.id);
        clients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(app: &str, name: &str, core: usize) -> StreamStats {
        StreamStats {
            app: app.into(),
            name: name.into(),
            core,
            source: StreamSource::Publisher {
                id: 1,
                addr: "127.0.0.1:1".into(),
            },
            video_codec: None,
            audio_codec: None,
            width: None,
            height: None,
            frame_rate: None,
            bitrate_in_bps: 0,
            uptime_secs: 0,
            players_per_core: BTreeMap::new(),
            players: 0,
        }
    }

    #[test]
    fn merging_counts_players_on_every_core() {
        let board = StatsBoard::new(2);
        let mut core0 = CoreStats::default();
        core0.published.push(stream("live", "a", 0));
        core0.players.insert("live/a".into(), 2);
        let mut core1 = CoreStats::default();
        core1.players.insert("live/a".into(), 3);
        board.publish(0, core0);
        board.publish(1, core1);
        let streams = board.streams();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].players, 5);
        assert_eq!(streams[0].players_per_core.get(&1), Some(&3));
    }

    #[test]
    fn a_source_says_its_kind() {
        let upstream = StreamSource::Upstream {
            upstream: "127.0.0.1:1940".into(),
        };
        assert_eq!(
            serde_json::to_value(upstream).expect("json"),
            serde_json::json!({"kind": "upstream", "upstream": "127.0.0.1:1940"})
        );
        let publisher = serde_json::to_value(&stream("live", "a", 0).source).expect("json");
        assert_eq!(
            publisher,
            serde_json::json!({"kind": "publisher", "id": 1, "addr": "127.0.0.1:1"})
        );
    }
}
