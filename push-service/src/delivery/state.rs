//! A delivery's state, as the store keeps it and the API shows it.

use std::fmt;

/// Where one (notification, registration) delivery stands. `Queued` and `Held`
/// are open; the others are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for an attempt (first, retry, or after an open circuit).
    Queued,
    /// On the direct channel, kept until the device takes it or the TTL ends.
    Held,
    /// The provider accepted it.
    Sent,
    /// Refused for good (payload, or undocumented answers past the bound).
    Failed,
    /// The TTL ended first.
    Expired,
    /// The registration is gone or its token dead.
    Invalid,
}

impl DeliveryState {
    /// Every state, for tables and tests.
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Queued,
        DeliveryState::Held,
        DeliveryState::Sent,
        DeliveryState::Failed,
        DeliveryState::Expired,
        DeliveryState::Invalid,
    ];

    /// The name the store keeps (the `state` column).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Held => "held",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
            DeliveryState::Expired => "expired",
            DeliveryState::Invalid => "invalid",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// What an auth server sees: a held delivery is still `queued` to it (the
    /// device has not taken it yet).
    pub fn public(self) -> DeliveryState {
        match self {
            DeliveryState::Held => DeliveryState::Queued,
            other => other,
        }
    }

    /// No attempt follows.
    pub fn is_final(self) -> bool {
        !matches!(self, DeliveryState::Queued | DeliveryState::Held)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryState;

    #[test]
    fn names_round_trip_and_the_public_view_hides_held() {
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
        }
        assert_eq!(DeliveryState::parse("expanding"), None);
        let public: Vec<_> = DeliveryState::ALL.map(|s| s.public().as_str()).to_vec();
        assert_eq!(
            public,
            ["queued", "queued", "sent", "failed", "expired", "invalid"]
        );
        let open: Vec<_> = DeliveryState::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .collect();
        assert_eq!(open, [DeliveryState::Queued, DeliveryState::Held]);
    }
}
