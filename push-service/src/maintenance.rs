//! Operator commands that work on the store directly, with no node serving:
//! master key rotation and SQLite backups (`docs/OPERATIONS.md`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::crypto::Sealer;
use crate::store::Store;

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    crate::store::connect(
        config.database_url.expose(),
        2,
        config.sqlite_full_sync,
        config.database_ca_file.as_deref(),
    )
    .await
    .context("connecting to the database")
}

/// Reads a master key file (32 bytes, base64).
pub fn read_key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    crate::config::decode_master_key(&text).with_context(|| {
        format!(
            "{}: a master key is 32 bytes, base64-encoded (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display()
        )
    })
}

/// Re-seals every credential with `reseal` (in one transaction), opening each
/// with the configured ring; the whole change is undone if one does not open.
/// Then the inbox's sealed content, a page per transaction. Returns the
/// counts of credentials and of inbox items changed.
async fn reseal_all(
    config: &Config,
    seal_with: Sealer,
    only_if: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
) -> anyhow::Result<(usize, usize)> {
    let store = open_store(config).await?;
    let open_with = config.sealer();
    let only_if = std::sync::Arc::new(only_if);
    let rule = |aad: fn(&str, &str) -> String| {
        let (open_with, seal_with, only_if) =
            (open_with.clone(), seal_with.clone(), only_if.clone());
        move |a: &str, b: &str, sealed: &[u8]| {
            if !only_if(sealed) {
                return Ok(None);
            }
            let aad = aad(a, b);
            let secret = open_with.open(sealed, &aad)?;
            Ok(Some(seal_with.seal(&secret, &aad)))
        }
    };
    let credentials = store
        .reseal_credentials(&rule(crate::credentials::credential_aad_str))
        .await?;
    let items = store
        .reseal_inbox_items(&rule(crate::inbox::at_rest_aad))
        .await?;
    Ok((credentials, items))
}

/// Step 1 of a rotation: every credential sealed under the new key and,
/// still, under the configured (old) one, so nodes not yet given the new
/// key keep working. Returns what to tell the operator.
pub async fn rotate_master_key(config: &Config, new_key_file: &Path) -> anyhow::Result<String> {
    let new_key = read_key_file(new_key_file)?;
    let current = *config.master_key.expose();
    anyhow::ensure!(
        new_key != current,
        "the new key is the configured master key already; to finish a rotation use --finish"
    );
    let ring = Sealer::ring(&new_key, &[current]);
    let (changed, items) = reseal_all(config, ring, |_| true).await?;
    Ok(format!(
        "{changed} credential(s) and {items} inbox item(s) now sealed under the new key {} and still under the old key {}.\n\
         Next: restart every node with master_key_file = {} and master_key_previous_file = <the old key>; \
         then with the new key alone; then run `push-service rotate-master-key --finish`.",
        hex::encode(crate::crypto::key_id(&new_key)),
        hex::encode(crate::crypto::key_id(&current)),
        new_key_file.display(),
    ))
}

/// Last step of a rotation: every credential sealed under the configured key
/// alone (the old key's copies dropped), including any stored meanwhile by a
/// node that had only the old key.
pub async fn finish_master_key_rotation(config: &Config) -> anyhow::Result<String> {
    let current = Sealer::new(config.master_key.expose());
    let check = current.clone();
    let (changed, items) =
        reseal_all(config, current, move |sealed| !check.sealed_as_ring(sealed)).await?;
    Ok(format!(
        "{changed} credential(s) and {items} inbox item(s) re-sealed; everything sealed is now under key {} alone. \
         Remove master_key_previous from the configuration and destroy the old key.",
        hex::encode(crate::crypto::key_id(config.master_key.expose())),
    ))
}

/// A consistent copy of a SQLite database into `out` (`VACUUM INTO`, while the
/// node serves). PostgreSQL is backed up with its own tools (`pg_dump`).
pub async fn backup(config: &Config, out: &Path) -> anyhow::Result<String> {
    let url = config.database_url.expose();
    anyhow::ensure!(
        url.starts_with("sqlite:"),
        "`push-service backup` copies a SQLite database; back up PostgreSQL with `pg_dump` \
         (docs/OPERATIONS.md, \"Backup and restore\")"
    );
    anyhow::ensure!(
        !out.exists(),
        "{} exists already; a backup never overwrites a file",
        out.display()
    );
    let target = out.to_str().context("the backup path must be UTF-8")?;
    let pool = sqlx::SqlitePool::connect(url)
        .await
        .context("opening the SQLite database")?;
    sqlx::query("VACUUM INTO $1")
        .bind(target)
        .execute(&pool)
        .await
        .with_context(|| format!("writing the backup to {}", out.display()))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(format!(
        "backup written to {} ({bytes} bytes)",
        out.display()
    ))
}
