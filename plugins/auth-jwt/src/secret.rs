//! The HMAC key that signs access tokens: from `secret` in the config, or else made once and
//! kept in `{data_dir}/jwt-secret`.
//!
//! Keeping a generated key on disk lets tokens survive restarts without asking operators to
//! invent one; the file is created with mode 0600 (exclusively, so two starts cannot race
//! into different keys) and holds the key as base64 text, so an operator can move it into
//! `seed.toml` or a secret store later.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use seed_broker::hooks::PluginError;

use crate::NAME;

/// The file, inside the data directory, that keeps a generated key.
pub const FILE: &str = "jwt-secret";

/// The shortest key accepted (the output size of SHA-256, as RFC 7518 asks for HS256).
pub const MIN_LEN: usize = 32;

/// Decodes a configured key (standard base64) and checks its length.
pub fn decode(text: &str) -> Result<Vec<u8>, PluginError> {
    let key = STANDARD
        .decode(text.trim())
        .map_err(|e| PluginError(format!("{NAME}: secret is not base64: {e}")))?;
    if key.len() < MIN_LEN {
        return Err(PluginError(format!(
            "{NAME}: secret is {} bytes; at least {MIN_LEN} are needed",
            key.len()
        )));
    }
    Ok(key)
}

/// The key kept in `dir`, made (32 random bytes, file mode 0600) if there is none yet.
pub fn load_or_create(dir: &Path) -> Result<Vec<u8>, PluginError> {
    let path = dir.join(FILE);
    let error = |what: &str, e: &dyn std::fmt::Display| {
        PluginError(format!("{NAME}: {what} {}: {e}", path.display()))
    };
    match fs::read_to_string(&path) {
        Ok(text) => return read_back(&path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(error("cannot read", &e)),
    }
    fs::create_dir_all(dir).map_err(|e| error("cannot create the folder of", &e))?;
    let mut key = vec![0u8; MIN_LEN];
    getrandom::fill(&mut key).map_err(|e| error("no randomness for", &e))?;
    let created = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path);
    let mut file = match created {
        Ok(file) => file,
        // Another start made it first: use that one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path).map_err(|e| error("cannot read", &e))?;
            return read_back(&path, &text);
        }
        Err(e) => return Err(error("cannot create", &e)),
    };
    let text = format!("{}\n", STANDARD.encode(&key));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| error("cannot write", &e))?;
    tracing::info!(path = %path.display(), "{NAME}: generated a new token signing key");
    Ok(key)
}

fn read_back(path: &Path, text: &str) -> Result<Vec<u8>, PluginError> {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let path = path.display();
        tracing::warn!(%path, "{NAME}: the signing key file is readable by others");
    }
    decode(text).map_err(|e| PluginError(format!("{} ({})", e.0, path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = load_or_create(&data).unwrap();
        assert_eq!(first.len(), MIN_LEN);
        let mode = fs::metadata(data.join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&data).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "c2hvcnQ=\n").unwrap();
        let error = load_or_create(dir.path()).unwrap_err();
        assert!(error.0.contains("at least 32"), "{error}");
    }

    #[test]
    fn configured_secrets() {
        assert_eq!(decode(&STANDARD.encode([7u8; 32])).unwrap(), vec![7u8; 32]);
        assert!(decode(&STANDARD.encode([7u8; 31])).unwrap_err().0.contains("31 bytes"));
        assert!(decode("not base64!").unwrap_err().0.contains("base64"));
    }
}
