//! The delivery domain: a delivery's states, the one state machine that moves
//! it, and the retry schedule. Pure: no store, queue, clock or HTTP here; the
//! dispatcher asks and applies.

pub mod phase;
pub mod provider;
pub mod retry;
pub mod state;
pub mod transition;

pub use phase::NotificationPhase;
pub use provider::ProviderKind;
pub use state::DeliveryState;
pub use transition::{after_answer, before_send, Answer, Attempted, Transition, Waiting};
