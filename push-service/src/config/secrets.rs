//! Secrets the node generates on first start (admin token, master key): kept
//! in private files under the data directory and reused on the next start.

use std::path::{Path, PathBuf};

use base64::Engine;

use super::raw::RawConfig;
use super::{invalid, ConfigError};
use crate::secret::Secret;

pub(super) fn file_or_default(configured: &str, data_dir: &Path, name: &str) -> PathBuf {
    if configured.is_empty() {
        data_dir.join(name)
    } else {
        PathBuf::from(configured)
    }
}

pub(super) fn ensure_private_dir(dir: &Path) -> Result<(), ConfigError> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| ConfigError::Io {
        key: "data_dir",
        path: dir.to_owned(),
        source,
    })
}

/// Reads a secret file, or creates it (mode 0600) with `generate()` when it does not exist.
pub(super) fn read_or_create_secret(
    key: &'static str,
    path: &Path,
    created: &mut Vec<PathBuf>,
    generate: impl FnOnce() -> String,
) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        key,
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(value) => Ok(value.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = generate();
            write_private_file(path, &value).map_err(io)?;
            created.push(path.to_owned());
            Ok(value)
        }
        Err(e) => Err(io(e)),
    }
}

pub(super) fn write_private_file(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The admin tokens and master keys: `(admin token, previous admin token,
/// master key, previous master key, files created)`.
type Secrets = (
    String,
    Option<Secret<String>>,
    [u8; 32],
    Option<[u8; 32]>,
    Vec<PathBuf>,
);

impl RawConfig {
    /// Reads (or, on first start, creates) the secrets.
    pub(super) fn secrets(&self) -> Result<Secrets, ConfigError> {
        let raw = self;
        let mut created_files = Vec::new();
        let needs_files = raw.admin_token.is_empty() || raw.master_key.is_empty();
        if needs_files {
            ensure_private_dir(&raw.data_dir)?;
        }
        let admin_token = if !raw.admin_token.is_empty() {
            raw.admin_token.clone()
        } else {
            let path = file_or_default(&raw.admin_token_file, &raw.data_dir, "admin.token");
            read_or_create_secret("admin_token_file", &path, &mut created_files, || {
                crate::ids::random_token(32)
            })?
        };
        if admin_token.len() < 16 {
            return Err(invalid("admin_token", "must be at least 16 characters"));
        }
        let master_key_b64 = if !raw.master_key.is_empty() {
            raw.master_key.clone()
        } else {
            let path = file_or_default(&raw.master_key_file, &raw.data_dir, "master.key");
            read_or_create_secret("master_key_file", &path, &mut created_files, || {
                let key: [u8; 32] = rand::random();
                base64::engine::general_purpose::STANDARD.encode(key)
            })?
        };
        let master_key = decode_master_key(&master_key_b64)
            .ok_or_else(|| invalid("master_key", "must be 32 bytes, base64-encoded"))?;
        // The previous key of a rotation: given inline or in a file that must exist.
        let previous_b64 = if !raw.master_key_previous.is_empty() {
            Some(raw.master_key_previous.clone())
        } else if !raw.master_key_previous_file.is_empty() {
            let path = PathBuf::from(&raw.master_key_previous_file);
            Some(
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                    key: "master_key_previous_file",
                    path,
                    source,
                })?,
            )
        } else {
            None
        };
        let master_key_previous = previous_b64
            .map(|b64| {
                decode_master_key(&b64).ok_or_else(|| {
                    invalid("master_key_previous", "must be 32 bytes, base64-encoded")
                })
            })
            .transpose()?;
        let admin_token_previous = match raw.admin_token_previous.trim() {
            "" => None,
            token if token.len() < 16 => {
                return Err(invalid(
                    "admin_token_previous",
                    "must be at least 16 characters",
                ))
            }
            token => Some(Secret::new(token.to_owned())),
        };
        Ok((
            admin_token,
            admin_token_previous,
            master_key,
            master_key_previous,
            created_files,
        ))
    }
}

/// A master key as configured: 32 bytes, base64 (surrounding whitespace ignored).
pub fn decode_master_key(b64: &str) -> Option<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}
