//! Listen addresses as people write them, and the socket addresses each one stands for.
//!
//! A listen field (`rtmp.listen`, `--rtmp-listen`, …) takes the forms users type:
//!
//! | written | binds |
//! |---|---|
//! | `1935`, `:1935`, `*:1935` | every address: `0.0.0.0:1935` and `[::]:1935` |
//! | `localhost:1935` | `127.0.0.1:1935` and `[::1]:1935` |
//! | `0.0.0.0:1935`, `127.0.0.1:1935` | that IPv4 address |
//! | `[::]:1935`, `[::1]:1935` | that IPv6 address (IPv6 only: see below) |
//!
//! TOML may give the port as a bare integer (`listen = 1935`). No other host name is
//! resolved: a listen address that depends on DNS at start-up would bind different
//! addresses on different days.
//!
//! One field may therefore stand for several socket addresses; every core binds each of
//! them. IPv6 sockets are bound with `IPV6_V6ONLY`, so `[::]:1935` and `0.0.0.0:1935` are two
//! listeners rather than one dual-stack socket that would clash with the other. The IPv6 half
//! of a form that only *implies* IPv6 (`:1935`, `localhost:1935`) is optional: on a host
//! without IPv6 the node leaves it out with a log line (see `ports::usable`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// What a listen field names: one or more socket addresses.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The addresses to bind, IPv4 first.
    addrs: Vec<SocketAddr>,
    /// True when the IPv6 addresses were implied by the form, not written out, and may be
    /// left out on a host without IPv6.
    ipv6_implied: bool,
}

/// Why a listen address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Nothing was written.
    #[error("an empty listen address: write PORT, :PORT, IP:PORT, [IPv6]:PORT or localhost:PORT")]
    Empty,
    /// The port is not a number from 0 to 65535.
    #[error("{text:?}: the port {port:?} is not a number from 0 to 65535")]
    Port {
        /// The address as written.
        text: String,
        /// The port part.
        port: String,
    },
    /// The host is neither an IP address, `*`, nor `localhost`.
    #[error("{text:?} is not a listen address: write PORT, :PORT, IP:PORT, [IPv6]:PORT or localhost:PORT (host names other than localhost are not resolved)")]
    Host {
        /// The address as written.
        text: String,
    },
}

impl Listen {
    /// Exactly one socket address.
    pub fn one(addr: SocketAddr) -> Listen {
        Listen {
            addrs: vec![addr],
            ipv6_implied: false,
        }
    }

    /// Every address of the host (IPv4 and IPv6) on `port`.
    pub fn every(port: u16) -> Listen {
        Listen::both(Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, port)
    }

    fn both(v4: Ipv4Addr, v6: Ipv6Addr, port: u16) -> Listen {
        Listen {
            addrs: vec![
                SocketAddr::new(IpAddr::V4(v4), port),
                SocketAddr::new(IpAddr::V6(v6), port),
            ],
            ipv6_implied: true,
        }
    }

    /// The socket addresses to bind, IPv4 first.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether `addr` (one of [`Listen::addrs`]) may be left out when the host has no IPv6:
    /// an IPv6 address the written form only implied.
    pub fn is_optional(&self, addr: SocketAddr) -> bool {
        self.ipv6_implied && addr.is_ipv6()
    }

    /// The port (every address of one field shares it).
    pub fn port(&self) -> u16 {
        self.addrs.first().map_or(0, SocketAddr::port)
    }
}

/// Equal when they bind the same addresses, however they were written.
impl PartialEq for Listen {
    fn eq(&self, other: &Listen) -> bool {
        self.addrs == other.addrs
    }
}

impl Eq for Listen {}

/// The addresses, comma-separated: `0.0.0.0:1935, [::]:1935`.
impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

impl FromStr for Listen {
    type Err = ListenError;

    fn from_str(text: &str) -> Result<Listen, ListenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ListenError::Empty);
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Listen::one(addr));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Listen::every(port(text, text)?));
        }
        let Some((host, port_text)) = text.rsplit_once(':') else {
            return Err(ListenError::Host { text: text.into() });
        };
        let port = port(text, port_text)?;
        match host {
            "" | "*" => Ok(Listen::every(port)),
            _ if host.eq_ignore_ascii_case("localhost") => {
                Ok(Listen::both(Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST, port))
            }
            _ => Err(ListenError::Host { text: text.into() }),
        }
    }
}

fn port(text: &str, port: &str) -> Result<u16, ListenError> {
    port.parse().map_err(|_| ListenError::Port {
        text: text.into(),
        port: port.into(),
    })
}

/// A listen field that may be left empty (`""`) to turn its listener off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionalListen(pub Option<Listen>);

impl OptionalListen {
    /// True when the field is empty (its listener is off).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl<'de> Deserialize<'de> for OptionalListen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListenVisitor)
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ListenVisitor)?
            .0
            .ok_or_else(|| de::Error::custom(ListenError::Empty))
    }
}

/// Reads a string (`":1935"`, `""` for none) or a bare port number (`1935`).
struct ListenVisitor;

impl Visitor<'_> for ListenVisitor {
    type Value = OptionalListen;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a listen address such as \":1935\", \"127.0.0.1:1935\" or a port number")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<OptionalListen, E> {
        if text.trim().is_empty() {
            return Ok(OptionalListen(None));
        }
        text.parse()
            .map(|l| OptionalListen(Some(l)))
            .map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, port: i64) -> Result<OptionalListen, E> {
        u16::try_from(port)
            .map(|port| OptionalListen(Some(Listen::every(port))))
            .map_err(|_| E::custom(format!("the port {port} is not a number from 0 to 65535")))
    }

    fn visit_u64<E: de::Error>(self, port: u64) -> Result<OptionalListen, E> {
        self.visit_i64(i64::try_from(port).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(text: &str) -> Vec<String> {
        let listen: Listen = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        listen.addrs().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_bare_port_means_every_address_of_both_families() {
        assert_eq!(addrs("1935"), ["0.0.0.0:1935", "[::]:1935"]);
        assert_eq!(addrs(":1935"), ["0.0.0.0:1935", "[::]:1935"]);
        assert_eq!(addrs("*:1935"), ["0.0.0.0:1935", "[::]:1935"]);
    }

    #[test]
    fn localhost_means_both_loopback_addresses() {
        assert_eq!(addrs("localhost:1935"), ["127.0.0.1:1935", "[::1]:1935"]);
        assert_eq!(addrs("LOCALHOST:8081"), ["127.0.0.1:8081", "[::1]:8081"]);
    }

    #[test]
    fn an_ip_address_means_itself() {
        assert_eq!(addrs("0.0.0.0:1935"), ["0.0.0.0:1935"]);
        assert_eq!(addrs("127.0.0.1:1935"), ["127.0.0.1:1935"]);
        assert_eq!(addrs("[::]:1935"), ["[::]:1935"]);
        assert_eq!(addrs("[::1]:1935"), ["[::1]:1935"]);
    }

    #[test]
    fn only_implied_ipv6_addresses_are_optional() {
        let every: Listen = ":1935".parse().expect("parses");
        let [v4, v6] = [every.addrs()[0], every.addrs()[1]];
        assert!(!every.is_optional(v4));
        assert!(every.is_optional(v6));
        let written: Listen = "[::]:1935".parse().expect("parses");
        assert!(!written.is_optional(written.addrs()[0]));
    }

    #[test]
    fn bad_forms_say_what_is_accepted() {
        for (text, says) in [
            ("", "empty"),
            ("  ", "empty"),
            (":99999", "not a number from 0 to 65535"),
            ("1935x", "is not a listen address"),
            ("example.com:1935", "host names other than localhost"),
            ("127.0.0.1", "is not a listen address"),
            ("localhost:", "not a number"),
            ("[::1:1935", "is not a listen address"),
        ] {
            let err = text.parse::<Listen>().expect_err(text).to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn equal_when_they_bind_the_same_addresses() {
        let a: Listen = "1935".parse().expect("parses");
        let b: Listen = "*:1935".parse().expect("parses");
        assert_eq!(a, b);
        assert_ne!(a, "0.0.0.0:1935".parse::<Listen>().expect("parses"));
    }

    #[test]
    fn displays_every_address() {
        let every: Listen = ":1935".parse().expect("parses");
        assert_eq!(every.to_string(), "0.0.0.0:1935, [::]:1935");
        assert_eq!(every.port(), 1935);
    }
}
