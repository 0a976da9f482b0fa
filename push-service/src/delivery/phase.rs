//! A notification's fan-out phase.

/// Whether a notification still has registrations to find (an alias or
/// whole-app send, expanded in chunks) or all its deliveries exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationPhase {
    /// Fan-out not finished: workers expand it chunk by chunk.
    Expanding,
    /// Every delivery row exists.
    Dispatching,
}

impl NotificationPhase {
    /// The name the store keeps (the notification's `state` column).
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationPhase::Expanding => "expanding",
            NotificationPhase::Dispatching => "dispatching",
        }
    }

    /// The phase a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        [NotificationPhase::Expanding, NotificationPhase::Dispatching]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::NotificationPhase;

    #[test]
    fn names_round_trip() {
        for phase in [NotificationPhase::Expanding, NotificationPhase::Dispatching] {
            assert_eq!(NotificationPhase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(NotificationPhase::parse("queued"), None);
    }
}
