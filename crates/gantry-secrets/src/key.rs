//! The secret key: where it comes from, how it is written, and the checks on it.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The environment variable that holds the key, as 64 hex digits or base64.
pub const KEY_ENV: &str = "GANTRY_SECRET_KEY";
/// The key file in the data directory, used when [`KEY_ENV`] is not set.
pub const KEY_FILE: &str = "secret.key";

const KEY_LEN: usize = 32;
/// Permission bits the key file must not have: any access by group or others.
const TOO_OPEN: u32 = 0o077;
/// More than any key file Gantry writes; a bigger file is not a key and is not read whole.
const MAX_FILE_LEN: u64 = 4096;

/// The 32-byte key that seals and opens secrets. Its `Debug` never shows the key.
pub struct SecretKey {
    /// Holds the key; zeroized on drop.
    cipher: XChaCha20Poly1305,
    origin: KeyOrigin,
}

/// Where a [`SecretKey`] came from, for the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// [`KEY_ENV`].
    Environment,
    /// The key file; `created` when this load generated it.
    File { path: PathBuf, created: bool },
    /// [`SecretKey::from_bytes`].
    Bytes,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("origin", &self.origin)
            .field("key", &format_args!("***"))
            .finish()
    }
}

impl SecretKey {
    /// The key from `GANTRY_SECRET_KEY` (looked up through `env`) when it is set; otherwise the
    /// one in `data_dir/secret.key`, generated at first use with mode 0600. A key file that group
    /// or others may access is refused, and so is a malformed key from either place.
    pub fn load(data_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<SecretKey> {
        if let Some(text) = env(KEY_ENV) {
            let text = Zeroizing::new(text);
            let bytes = parse(&text).map_err(|problem| Error::EnvFormat { problem })?;
            return Ok(SecretKey::new(&bytes, KeyOrigin::Environment));
        }
        let path = data_dir.join(KEY_FILE);
        if let Some(key) = read_key_file(&path)? {
            return Ok(key);
        }
        create_key_file(data_dir, &path)
    }

    /// A key from its 32 bytes, e.g. for tests.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey::new(&Zeroizing::new(bytes), KeyOrigin::Bytes)
    }

    /// Where the key came from.
    pub fn origin(&self) -> &KeyOrigin {
        &self.origin
    }

    pub(crate) fn cipher(&self) -> &XChaCha20Poly1305 {
        &self.cipher
    }

    fn new(bytes: &[u8; KEY_LEN], origin: KeyOrigin) -> SecretKey {
        // A borrowed view of the bytes: no copy of the key is left behind to zeroize.
        let key: &Key = bytes.into();
        SecretKey {
            cipher: XChaCha20Poly1305::new(key),
            origin,
        }
    }
}

/// Reads and checks the key file; `None` when there is none.
fn read_key_file(path: &Path) -> Result<Option<SecretKey>> {
    let read_error = |source| Error::ReadKey {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    // The opened file's own metadata: no window between checking and reading.
    let metadata = file.metadata().map_err(read_error)?;
    let format_error = |problem: String| Error::FileFormat {
        path: path.to_owned(),
        problem,
    };
    if !metadata.is_file() {
        return Err(format_error("it is not a regular file".to_owned()));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & TOO_OPEN != 0 {
        return Err(Error::FileTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    let bytes = parse(&text).map_err(format_error)?;
    Ok(Some(SecretKey::new(
        &bytes,
        KeyOrigin::File {
            path: path.to_owned(),
            created: false,
        },
    )))
}

/// Generates a key and writes it to `path`, mode 0600.
///
/// The key goes to a temporary file first and is then linked into place, which fails if the file
/// exists: a crash never leaves half a key behind, and of two servers starting at once, both end
/// up with the one key that got there first.
fn create_key_file(data_dir: &Path, path: &Path) -> Result<SecretKey> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(bytes.as_mut()).map_err(|e| Error::Random(e.to_string()))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| Error::Random(e.to_string()))?;
    let temporary = data_dir.join(format!(".{KEY_FILE}.{}", hex::encode(suffix)));
    let create_error = |source| Error::CreateKey {
        path: path.to_owned(),
        source,
    };

    let written =
        write_new_private(&temporary, &bytes).and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            // Make the new name durable too: losing the key loses every stored secret.
            if let Ok(dir) = std::fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            Ok(SecretKey::new(
                &bytes,
                KeyOrigin::File {
                    path: path.to_owned(),
                    created: true,
                },
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read_key_file(path)? {
            Some(key) => Ok(key),
            None => Err(create_error(e)),
        },
        Err(e) => Err(create_error(e)),
    }
}

fn write_new_private(path: &Path, bytes: &[u8; KEY_LEN]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut text = Zeroizing::new(hex::encode(bytes));
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// 32 bytes from 64 hex digits or base64 (standard or URL-safe, padded or not). The error says
/// what is wrong without repeating the text.
pub(crate) fn parse(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".to_owned());
    }
    let all_hex = text.bytes().all(|b| b.is_ascii_hexdigit());
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if all_hex && text.len() == 2 * KEY_LEN {
        hex::decode_to_slice(text, key.as_mut()).map_err(|e| e.to_string())?;
        return Ok(key);
    }
    let decoded = [alphabet::STANDARD, alphabet::URL_SAFE]
        .iter()
        .find_map(|alphabet| {
            let config = GeneralPurposeConfig::new()
                .with_decode_padding_mode(DecodePaddingMode::Indifferent);
            GeneralPurpose::new(alphabet, config).decode(text).ok()
        })
        .map(Zeroizing::new);
    match decoded {
        Some(bytes) if bytes.len() == KEY_LEN => {
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        _ if all_hex => Err(format!(
            "it is {} hex digits, not {}",
            text.len(),
            2 * KEY_LEN
        )),
        Some(bytes) => Err(format!(
            "it decodes (as base64) to {} bytes, not {KEY_LEN}",
            bytes.len()
        )),
        None => Err(format!(
            "its {} characters are neither hex digits nor base64",
            text.chars().count()
        )),
    }
}
