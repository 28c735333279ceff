//! `[proxy_protocol]`: which listeners expect a PROXY protocol header (a load balancer in
//! front of the node), from which peers, and how long the node waits for one.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::ConfigError;

/// `[proxy_protocol]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    /// Listeners that read a PROXY header (v1 or v2) from trusted peers: any of `rtmp`,
    /// `rtmps`, `rtmpt`, `http`, `pull`. Empty: none (the default).
    pub listeners: Vec<ProxyListener>,
    /// Peers (CIDRs or single addresses) whose PROXY header is believed. On a listener in
    /// `listeners`, a trusted peer must send one; any other peer that sends one is refused,
    /// and one that sends none is served as itself.
    pub trusted: Vec<TrustedNet>,
    /// Seconds a connection has, from accept, to send its header (or, from an untrusted peer,
    /// its first bytes).
    pub header_timeout_secs: u64,
}

impl Default for ProxyProtocolConfig {
    fn default() -> Self {
        ProxyProtocolConfig {
            listeners: Vec::new(),
            trusted: Vec::new(),
            header_timeout_secs: 5,
        }
    }
}

impl ProxyProtocolConfig {
    /// Whether `listener` reads PROXY headers.
    pub fn enabled_on(&self, listener: ProxyListener) -> bool {
        self.listeners.contains(&listener)
    }

    /// Whether a header from `peer` is believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.0.contains(&peer))
    }

    /// Refuses listeners without trusted peers and a zero timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| ConfigError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if !self.listeners.is_empty() && self.trusted.is_empty() {
            return Err(invalid(
                "proxy_protocol.trusted",
                "is empty while proxy_protocol.listeners names listeners: list the load \
                 balancers' addresses (CIDRs)",
            ));
        }
        if self.header_timeout_secs == 0 {
            return Err(invalid(
                "proxy_protocol.header_timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A listener that can read PROXY headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyListener {
    /// `rtmp.listen`.
    Rtmp,
    /// `rtmps.listen` (the header comes before TLS).
    Rtmps,
    /// `rtmpt.listen`.
    Rtmpt,
    /// `http.listen`.
    Http,
    /// `cluster.pull_listen` (before TLS when `pull_tls`).
    Pull,
}

/// A trusted network: `10.0.0.0/8`, `2001:db8::/32`, or one address (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet(pub IpNet);

impl FromStr for TrustedNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(TrustedNet(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| TrustedNet(IpNet::from(ip.to_canonical())))
            .map_err(|_| format!("`{s}` is not an address or a CIDR (e.g. 10.0.0.0/8)"))
    }
}

impl<'de> serde::Deserialize<'de> for TrustedNet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NetVisitor;
        impl Visitor<'_> for NetVisitor {
            type Value = TrustedNet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address or a CIDR, e.g. \"10.0.0.0/8\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TrustedNet, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(NetVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProxyProtocolConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn trusted_takes_cidrs_and_single_addresses() {
        let config = parse(
            "listeners = [\"rtmp\", \"http\"]\ntrusted = [\"10.0.0.0/8\", \"127.0.0.1\", \"2001:db8::/32\"]",
        )
        .expect("parses");
        assert!(config.enabled_on(ProxyListener::Rtmp));
        assert!(!config.enabled_on(ProxyListener::Rtmps));
        for trusted in ["10.1.2.3", "127.0.0.1", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(config.trusts(trusted.parse().expect("ip")), "{trusted}");
        }
        for other in ["11.0.0.1", "127.0.0.2", "2001:db9::1"] {
            assert!(!config.trusts(other.parse().expect("ip")), "{other}");
        }
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bad_values_are_refused_with_the_field() {
        let error = parse("trusted = [\"10.0.0.0/33\"]").expect_err("bad cidr");
        assert!(error.contains("10.0.0.0/33"), "{error}");
        let error = parse("listeners = [\"ftp\"]").expect_err("bad listener");
        assert!(error.contains("ftp"), "{error}");
        let config = parse("listeners = [\"rtmp\"]").expect("parses");
        let error = config.validate().expect_err("no trusted peers").to_string();
        assert!(error.contains("proxy_protocol.trusted"), "{error}");
    }
}
