//! `[limits]`: what one client address may cost a core (connections, new connections per
//! second, TLS handshakes per second), and how many addresses a core tracks.
//!
//! Every limit is per core and per address: each core enforces it on its own, with no
//! counter shared between cores. The kernel spreads one address's connections over the
//! cores (SO_REUSEPORT hashes the source port too), so a node with C cores grants one
//! address up to C times each value, and a client well under a value is never refused.
//! Behind a load balancer with a trusted PROXY header the address is the client's.

use serde::Deserialize;

use super::ConfigError;

/// `[limits]`. A value of 0 turns that limit off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections one address holds open on one core, all listeners together.
    pub max_connections_per_address: u32,
    /// New connections per second one address may open on one core (a token bucket).
    pub new_connections_per_second_per_address: u32,
    /// The bucket's size: new connections one address may open at once after a quiet spell.
    pub new_connections_burst_per_address: u32,
    /// TLS handshakes (RTMPS, TLS pulls) per second one address may start on one core.
    pub tls_handshakes_per_second_per_address: u32,
    /// The TLS bucket's size.
    pub tls_handshakes_burst_per_address: u32,
    /// Addresses one core tracks at most; idle ones are forgotten first, and past it a new
    /// address is refused while every tracked one holds connections.
    pub max_tracked_addresses: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_address: 1000,
            new_connections_per_second_per_address: 200,
            new_connections_burst_per_address: 1000,
            tls_handshakes_per_second_per_address: 100,
            tls_handshakes_burst_per_address: 500,
            max_tracked_addresses: 16_384,
        }
    }
}

impl LimitsConfig {
    /// Refuses a rate without a burst (it could never admit anyone) and an empty table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| ConfigError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if self.new_connections_per_second_per_address > 0
            && self.new_connections_burst_per_address == 0
        {
            return Err(invalid(
                "limits.new_connections_burst_per_address",
                "must be at least 1 while limits.new_connections_per_second_per_address is set",
            ));
        }
        if self.tls_handshakes_per_second_per_address > 0
            && self.tls_handshakes_burst_per_address == 0
        {
            return Err(invalid(
                "limits.tls_handshakes_burst_per_address",
                "must be at least 1 while limits.tls_handshakes_per_second_per_address is set",
            ));
        }
        if self.max_tracked_addresses < 16 {
            return Err(invalid(
                "limits.max_tracked_addresses",
                "must be at least 16",
            ));
        }
        Ok(())
    }
}
