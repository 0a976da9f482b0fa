//! Every answer APNs and FCM document, in one table: reason → class → action.
//! docs/providers.md shows the same table; a test holds the two together.

use std::time::Duration;

use super::Outcome;

/// What an answer says about a delivery, and so what the dispatcher does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The token is dead or not this app's: invalidate the registration.
    Device,
    /// This notification can never be delivered as it is: fail this delivery only.
    Notification,
    /// Every delivery of the app through this provider would fail: open the circuit,
    /// keep the delivery waiting without spending an attempt.
    Credential,
    /// The provider is overloaded or unreachable: retry with backoff until the TTL,
    /// honouring `Retry-After`.
    Provider,
    /// An answer neither provider documents: retried, at most `retry_max_attempts` times.
    Unknown,
}

impl Class {
    /// The word used in docs/providers.md.
    pub fn name(self) -> &'static str {
        match self {
            Class::Device => "device",
            Class::Notification => "notification",
            Class::Credential => "credential",
            Class::Provider => "provider",
            Class::Unknown => "unknown",
        }
    }

    /// The dispatcher's outcome for an answer of this class.
    pub fn outcome(self, reason: String, after: Option<Duration>) -> Outcome {
        match self {
            Class::Device => Outcome::InvalidToken(reason),
            Class::Notification => Outcome::Failed(reason),
            Class::Credential => Outcome::CredentialError(reason),
            Class::Provider => Outcome::Retry { reason, after },
            Class::Unknown => Outcome::Unknown { reason, after },
        }
    }
}

/// APNs: (HTTP status, `reason`, class). The status alone decides where Apple
/// documents no reason. Topic reasons depend on the topic: see [`apns_class`].
pub const APNS: &[(u16, &str, Class)] = &[
    (400, "BadCollapseId", Class::Notification),
    (400, "BadDeviceToken", Class::Device),
    (400, "BadExpirationDate", Class::Notification),
    (400, "BadMessageId", Class::Notification),
    (400, "BadPriority", Class::Notification),
    (400, "BadTopic", Class::Credential),
    (400, "DeviceTokenNotForTopic", Class::Device),
    (400, "DuplicateHeaders", Class::Notification),
    (400, "IdleTimeout", Class::Provider),
    (400, "InvalidPushType", Class::Notification),
    (400, "MissingDeviceToken", Class::Device),
    (400, "MissingTopic", Class::Credential),
    (400, "PayloadEmpty", Class::Notification),
    (400, "TopicDisallowed", Class::Credential),
    (403, "BadCertificate", Class::Credential),
    (403, "BadCertificateEnvironment", Class::Credential),
    (403, "BadEnvironmentKeyInToken", Class::Credential),
    (403, "ExpiredProviderToken", Class::Credential),
    (403, "Forbidden", Class::Credential),
    (403, "InvalidProviderToken", Class::Credential),
    (403, "MissingProviderToken", Class::Credential),
    (403, "UnrelatedKeyIdInToken", Class::Credential),
    (404, "BadPath", Class::Credential),
    (405, "MethodNotAllowed", Class::Credential),
    (410, "ExpiredToken", Class::Device),
    (410, "Unregistered", Class::Device),
    (413, "PayloadTooLarge", Class::Notification),
    (429, "TooManyProviderTokenUpdates", Class::Provider),
    (429, "TooManyRequests", Class::Provider),
    (500, "InternalServerError", Class::Provider),
    (503, "ServiceUnavailable", Class::Provider),
    (503, "Shutdown", Class::Provider),
];

/// Reasons about the topic: the credential's fault for its own bundle id, the
/// notification's when only a push type's suffix (`.voip`, `.complication`, …)
/// is refused — other notifications of the app still go.
const TOPIC_REASONS: &[&str] = &["TopicDisallowed", "BadTopic"];

/// The class of an APNs answer. `suffixed_topic`: the request's `apns-topic` was
/// the bundle id plus a push type's suffix.
pub fn apns_class(status: u16, reason: &str, suffixed_topic: bool) -> Class {
    if suffixed_topic && TOPIC_REASONS.contains(&reason) {
        return Class::Notification;
    }
    if let Some((_, _, class)) = APNS.iter().find(|(s, r, _)| *s == status && *r == reason) {
        return *class;
    }
    match status {
        410 => Class::Device,
        403 => Class::Credential,
        429 | 500 | 502 | 503 | 504 => Class::Provider,
        _ => Class::Unknown,
    }
}

/// FCM: (HTTP status, `FcmError` code, class). `""` stands for an answer without
/// an `FcmError` detail (the canonical status decides).
pub const FCM: &[(u16, &str, Class)] = &[
    (400, "INVALID_ARGUMENT", Class::Notification),
    (401, "THIRD_PARTY_AUTH_ERROR", Class::Credential),
    (401, "", Class::Credential),
    (403, "SENDER_ID_MISMATCH", Class::Device),
    (403, "", Class::Credential),
    (404, "UNREGISTERED", Class::Device),
    (404, "", Class::Credential),
    (429, "QUOTA_EXCEEDED", Class::Provider),
    (500, "INTERNAL", Class::Provider),
    (502, "", Class::Provider),
    (503, "UNAVAILABLE", Class::Provider),
    (504, "", Class::Provider),
];

/// The class of an FCM answer. `on_token`: an `INVALID_ARGUMENT` whose field
/// violation names `message.token` (the token is malformed: a device error).
pub fn fcm_class(status: u16, code: &str, on_token: bool) -> Class {
    match code {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => return Class::Device,
        "INVALID_ARGUMENT" if on_token => return Class::Device,
        "THIRD_PARTY_AUTH_ERROR" => return Class::Credential,
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" => return Class::Provider,
        _ => {}
    }
    if let Some((_, _, class)) = FCM.iter().find(|(s, c, _)| *s == status && *c == code) {
        return *class;
    }
    match status {
        400 if on_token => Class::Device,
        400 => Class::Notification,
        401 | 403 | 404 => Class::Credential,
        429 | 500 | 502 | 503 | 504 => Class::Provider,
        _ => Class::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_apns_row_classifies_as_listed() {
        for (status, reason, class) in APNS {
            assert_eq!(
                apns_class(*status, reason, false),
                *class,
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn a_refused_suffix_is_the_notification_s_fault() {
        assert_eq!(
            apns_class(400, "TopicDisallowed", true),
            Class::Notification
        );
        assert_eq!(apns_class(400, "BadTopic", true), Class::Notification);
        assert_eq!(apns_class(400, "TopicDisallowed", false), Class::Credential);
        // Only topic reasons depend on the topic.
        assert_eq!(
            apns_class(403, "InvalidProviderToken", true),
            Class::Credential
        );
    }

    #[test]
    fn undocumented_apns_answers_fall_back_on_the_status() {
        let cases = [
            (410, "Whatever", Class::Device),
            (403, "NewReason", Class::Credential),
            (503, "NewReason", Class::Provider),
            (502, "", Class::Provider),
            (400, "NewReason", Class::Unknown),
            (418, "Teapot", Class::Unknown),
        ];
        for (status, reason, class) in cases {
            assert_eq!(
                apns_class(status, reason, false),
                class,
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn every_fcm_row_classifies_as_listed() {
        for (status, code, class) in FCM {
            assert_eq!(fcm_class(*status, code, false), *class, "{status} {code}");
        }
        let cases = [
            (400, "INVALID_ARGUMENT", true, Class::Device),
            (400, "", true, Class::Device),
            (400, "", false, Class::Notification),
            (500, "UNSPECIFIED_ERROR", false, Class::Provider),
            (409, "UNSPECIFIED_ERROR", false, Class::Unknown),
            (200, "", false, Class::Unknown),
        ];
        for (status, code, on_token, class) in cases {
            assert_eq!(fcm_class(status, code, on_token), class, "{status} {code}");
        }
    }

    /// docs/providers.md shows exactly these tables, row for row.
    #[test]
    fn the_docs_show_this_table() {
        let doc = include_str!("../../../docs/providers.md");
        let section = |title: &str| {
            let start = doc.find(title).expect("section");
            let rest = &doc[start + title.len()..];
            let end = rest.find("\n## ").unwrap_or(rest.len());
            rest[..end]
                .lines()
                .filter_map(|l| {
                    let cells: Vec<&str> = l
                        .trim()
                        .trim_matches('|')
                        .split('|')
                        .map(str::trim)
                        .collect();
                    let status = cells.first()?.parse::<u16>().ok()?;
                    Some((status, cells[1].replace("(none)", ""), cells[2].to_owned()))
                })
                .collect::<Vec<_>>()
        };
        let code = |table: &[(u16, &str, Class)]| {
            table
                .iter()
                .map(|(s, r, c)| (*s, r.to_string(), c.name().to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(section("## APNs"), code(APNS));
        assert_eq!(section("## FCM"), code(FCM));
    }
}
