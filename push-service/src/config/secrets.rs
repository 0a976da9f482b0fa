//! Secrets the node generates on first start (admin token, master key): kept
//! in private files under the data directory and reused on the next start.

use std::path::{Path, PathBuf};

use super::ConfigError;

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
