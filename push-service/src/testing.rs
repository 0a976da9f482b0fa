//! Unit-test fixtures for the components: a node's core (configuration,
//! a real SQLite store in a temporary folder, the in-process queue) and rows
//! written straight into the store, without an HTTP server.

use std::sync::Arc;

use crate::config::Config;
use crate::delivery::ProviderKind;
use crate::dispatch::LocalQueue;
use crate::ids::{new_id, now_millis};
use crate::store::{App, Notifier, Registration, Store};

/// What the components of one node are built from, in a temporary folder.
pub(crate) struct Core {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub queue: Arc<LocalQueue>,
    _dir: tempfile::TempDir,
}

/// A core on a fresh SQLite file, migrated, with `extra` TOML over the defaults.
pub(crate) async fn core(extra: &str) -> Core {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let config = Config::from_toml(&format!(
        "data_dir = {data:?}\ndatabase_url = \"sqlite:{data}/push.db\"\n\
         public_url = \"http://127.0.0.1:1\"\n{extra}"
    ))
    .expect("configuration");
    let store = crate::store::connect(config.database_url.expose(), 4, true, None)
        .await
        .expect("store");
    store.migrate().await.expect("migrations");
    Core {
        config,
        store,
        queue: Arc::new(LocalQueue::default()),
        _dir: dir,
    }
}

/// An app with one notifier holding `scopes`.
pub(crate) async fn app_with_notifier(store: &dyn Store, scopes: &str) -> (String, Notifier) {
    let now = now_millis();
    let app = App {
        id: new_id("app"),
        name: "test".into(),
        created_at: now,
    };
    store.create_app(&app).await.expect("app");
    let notifier = Notifier {
        id: new_id("ntr"),
        app_id: app.id.clone(),
        name: "auth server".into(),
        scopes: scopes.into(),
        jwks: Some(r#"{"keys":[]}"#.into()),
        jwks_url: None,
        created_at: now,
        client_cert: None,
        token_reuse: false,
    };
    store.create_notifier(&notifier).await.expect("notifier");
    (app.id, notifier)
}

/// An active registration of `app_id` through `provider`.
pub(crate) async fn registration(
    store: &dyn Store,
    app_id: &str,
    provider: ProviderKind,
) -> String {
    let now = now_millis();
    let token = match provider {
        ProviderKind::Apns => Some(hex::encode(rand::random::<[u8; 32]>())),
        ProviderKind::Fcm => Some(format!("fcm-{}", hex::encode(rand::random::<[u8; 24]>()))),
        ProviderKind::Direct => None,
    };
    let registration = Registration {
        id: new_id("reg"),
        app_id: app_id.into(),
        provider: provider.as_str().into(),
        token,
        environment: (provider == ProviderKind::Apns).then(|| "production".into()),
        platform: "ios".into(),
        key_thumbprint: new_id("key"),
        encryption_jwk: None,
        status: "active".into(),
        invalid_reason: None,
        invalidated_at: None,
        created_at: now,
        updated_at: now,
        attested: false,
    };
    store
        .create_registration(&registration)
        .await
        .expect("registration");
    registration.id
}
