//! The password: read without echo (or from stdin), then hashed on the client so the raw password
//! never leaves the machine.
//!
//! The hash is BLAKE3 in key-derivation mode with the context [`PASSWORD_HASH_CONTEXT`] over
//! `username || 0x00 || password` (UTF-8), 32 bytes. The username makes the same password hash
//! differently for different users; the master hashes what it receives again with argon2id and
//! a salt before storing it. `docs/CLIENT.md` documents the scheme for other clients.

use std::io::BufRead;

use engine::Username;
use net::HashedPassword;

use super::ClientError;

/// The BLAKE3 key-derivation context of the client's password hash. Never change it: every
/// stored password would stop matching.
pub const PASSWORD_HASH_CONTEXT: &str = "papertrader client password v1";
/// Fewest characters of a new password (`pt register`).
pub const PASSWORD_CHARS_MIN: usize = 8;
/// Most bytes of a password read from the terminal or stdin.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// The client's hash of `password` for `username` (see the module docs).
pub fn hash_password(username: &Username, password: &str) -> Result<HashedPassword, ClientError> {
    let mut material = Vec::with_capacity(username.as_str().len() + 1 + password.len());
    material.extend_from_slice(username.as_str().as_bytes());
    material.push(0);
    material.extend_from_slice(password.as_bytes());
    let key = blake3::derive_key(PASSWORD_HASH_CONTEXT, &material);
    // 32 bytes is always within the protocol's 16..=128 bytes of hashedPass.
    HashedPassword::new(key.to_vec()).map_err(|e| ClientError::Local(e.to_string()))
}

/// Where the password comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// A prompt on the terminal, without echo.
    Prompt,
    /// One line of standard input (`--password-stdin`).
    Stdin,
}

/// Reads one line from `input`: the line ending is dropped, the rest is the password. At most
/// [`PASSWORD_BYTES_MAX`] bytes are accepted.
pub fn read_password_line(input: &mut impl BufRead) -> Result<String, ClientError> {
    let mut line = Vec::new();
    // One byte more than the limit tells a long line from a line at the limit.
    let limit = u64::try_from(PASSWORD_BYTES_MAX + 2).unwrap_or(u64::MAX);
    std::io::Read::take(&mut *input, limit)
        .read_until(b'\n', &mut line)
        .map_err(|e| ClientError::Local(format!("cannot read the password from stdin: {e}")))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > PASSWORD_BYTES_MAX {
        return Err(ClientError::Usage(format!(
            "the password is longer than {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    let password = String::from_utf8(line)
        .map_err(|_| ClientError::Usage("the password is not valid UTF-8".to_owned()))?;
    if password.is_empty() {
        return Err(ClientError::Usage("the password is empty".to_owned()));
    }
    Ok(password)
}

fn prompt(text: &str) -> Result<String, ClientError> {
    let password = rpassword::prompt_password(text).map_err(|e| {
        ClientError::Local(format!(
            "cannot read the password from a terminal ({e}); pipe it with --password-stdin"
        ))
    })?;
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(ClientError::Usage(format!(
            "the password is longer than {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    if password.is_empty() {
        return Err(ClientError::Usage("the password is empty".to_owned()));
    }
    Ok(password)
}

/// Reads the password of an existing account.
pub fn read_password(source: PasswordSource) -> Result<String, ClientError> {
    match source {
        PasswordSource::Prompt => prompt("Password: "),
        PasswordSource::Stdin => read_password_line(&mut std::io::stdin().lock()),
    }
}

/// Reads a new password: prompted twice on a terminal; at least [`PASSWORD_CHARS_MIN`]
/// characters.
pub fn read_new_password(source: PasswordSource) -> Result<String, ClientError> {
    let password = match source {
        PasswordSource::Prompt => {
            let first = prompt("New password: ")?;
            check_new_password(&first)?;
            let again = prompt("Repeat the password: ")?;
            if again != first {
                return Err(ClientError::Usage("the passwords do not match".to_owned()));
            }
            first
        }
        PasswordSource::Stdin => read_password_line(&mut std::io::stdin().lock())?,
    };
    check_new_password(&password)?;
    Ok(password)
}

/// Refuses a new password shorter than [`PASSWORD_CHARS_MIN`] characters.
pub fn check_new_password(password: &str) -> Result<(), ClientError> {
    let chars = password.chars().count();
    if chars < PASSWORD_CHARS_MIN {
        return Err(ClientError::Usage(format!(
            "the password has {chars} characters; use at least {PASSWORD_CHARS_MIN}"
        )));
    }
    Ok(())
}
