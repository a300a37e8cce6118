//! Pipeline secrets at rest: sealed with XChaCha20-Poly1305 under the server's secret key.
//!
//! [`seal`] encrypts one value with a fresh random 24-byte nonce and binds it to its place: the
//! associated data is `project\0name`, so a ciphertext copied to another project or secret name
//! does not open. [`open`] reverses it. [`SecretKey::load`] finds the key: `GANTRY_SECRET_KEY`, or
//! the file `data_dir/secret.key`, created (mode 0600) at first use.
//!
//! Pure apart from reading and creating the key file: no database, no HTTP. The store keeps only
//! what [`seal`] returns and never sees a plaintext.

mod key;

use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead, Payload};
pub use gantry_config::Secret;

pub use crate::key::{KEY_ENV, KEY_FILE, KeyOrigin, SecretKey};

/// Bytes in a nonce (XChaCha20's extended nonce).
pub const NONCE_LEN: usize = 24;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong, worded for the person reading the server's log. No message ever contains a
/// key or a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{KEY_ENV} is not a usable key: {problem}; it must be 32 random bytes written as 64 hex \
         digits or in base64 (make one with `openssl rand -hex 32`), or unset it to use \
         data_dir/{KEY_FILE}"
    )]
    EnvFormat { problem: String },

    #[error(
        "the secret key file {} is not a usable key: {problem}; it must hold 32 random bytes as 64 \
         hex digits (it is created so at first start: restore it from a backup, or set {KEY_ENV})",
        path.display()
    )]
    FileFormat {
        path: std::path::PathBuf,
        problem: String,
    },

    #[error(
        "refusing to use the secret key file {}: its mode {mode:04o} lets other users read or \
         change it; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    FileTooOpen { path: std::path::PathBuf, mode: u32 },

    #[error("cannot read the secret key file {}: {source}", path.display())]
    ReadKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error("cannot create the secret key file {}: {source}", path.display())]
    CreateKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),

    #[error("cannot encrypt secret {name} of project {project}")]
    Seal { project: String, name: String },

    /// The key is not the one the value was sealed with, or the value was moved or altered.
    #[error(
        "cannot decrypt secret {name} of project {project}: it was not sealed with this key for \
         this project and name (did {KEY_ENV} or data_dir/{KEY_FILE} change since it was stored? \
         otherwise set the secret again)"
    )]
    Open { project: String, name: String },

    #[error("secret {name} of project {project} is stored damaged: {problem}; set it again")]
    Corrupt {
        project: String,
        name: String,
        problem: String,
    },
}

/// A sealed value, as stored: the nonce and the ciphertext (with its 16-byte tag at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Encrypts `value`, bound to `project` and `name`, under a fresh random nonce.
pub fn seal(key: &SecretKey, project: &str, name: &str, value: &str) -> Result<Sealed> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
    let aad = associated_data(project, name);
    let ciphertext = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: value.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| Error::Seal {
            project: project.to_owned(),
            name: name.to_owned(),
        })?;
    Ok(Sealed {
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Decrypts what [`seal`] returned for the same `project` and `name` under the same key.
pub fn open(key: &SecretKey, project: &str, name: &str, sealed: &Sealed) -> Result<Secret> {
    let corrupt = |problem: String| Error::Corrupt {
        project: project.to_owned(),
        name: name.to_owned(),
        problem,
    };
    let nonce = XNonce::try_from(sealed.nonce.as_slice()).map_err(|_| {
        corrupt(format!(
            "its nonce is {} bytes, not {NONCE_LEN}",
            sealed.nonce.len()
        ))
    })?;
    let aad = associated_data(project, name);
    let plain = key
        .cipher()
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| Error::Open {
            project: project.to_owned(),
            name: name.to_owned(),
        })?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| corrupt("it is not UTF-8".to_owned()))
}

/// `project\0name`: unambiguous, since a secret's name never holds a NUL.
fn associated_data(project: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(project.len() + 1 + name.len());
    aad.extend_from_slice(project.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests;
