//! The session file: where `pt login` keeps the session id for later commands.
//!
//! Its path is `--session-file`, else `$PT_SESSION_FILE`, else
//! `$XDG_CONFIG_HOME/papertrader/session`, else `$HOME/.config/papertrader/session`. It is
//! created with mode 0600 (its directory 0700) and holds `key=value` lines:
//!
//! ```text
//! # PaperTrader session: a bearer secret, keep it private
//! username=alice
//! session=<64 lowercase hex digits>
//! remember=false
//! last_used=1741960800
//! worker=127.0.0.1:2049
//! ```
//!
//! `worker` is the address `pt login` went through. A worker elsewhere that does not know the
//! session (another PaperTrader, a mistyped `--worker`) does not make `pt` remove the file:
//! only a worker at that address, or a file without the line, does.
//!
//! Every session `pt` asks for is a *remembered* one on the wire (`isExpirable = false`): each
//! `pt` command is its own connection, and a worker ends an expirable session when its
//! connection closes (spec 4.6.1). Without `--remember`, the client gives the session the
//! expirable lifetime itself: once [`SESSION_IDLE_SECS`] pass without a command
//! (`last_used`, unix seconds), the next command ends it on the server and removes the file.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use engine::Username;
use net::SessionId;

use super::ClientError;

/// Environment variable naming the session file.
pub const ENV_SESSION_FILE: &str = "PT_SESSION_FILE";
/// Largest session file read, in bytes.
pub const SESSION_FILE_BYTES_MAX: u64 = 4096;

/// Seconds without a command after which a session saved without `--remember` ends (the
/// master's default idle timeout of expirable sessions).
pub const SESSION_IDLE_SECS: i64 = 30 * 60;

const HEADER: &str = "# PaperTrader session: a bearer secret, keep it private";

/// A saved login: who, and the session id the master handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// The account's username.
    pub username: Username,
    /// The session id (a bearer secret).
    pub session: SessionId,
    /// Saved with `--remember`: no client-side idle limit.
    pub remember: bool,
    /// When a command last used it, unix seconds.
    pub last_used: i64,
    /// The worker address (`host:port`, as given) `pt login` went through; `None` in a file
    /// written before `pt` kept it.
    pub worker: Option<String>,
}

/// The default path of the session file from the environment (see the module docs); `None`
/// when neither `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn default_path(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = env(ENV_SESSION_FILE).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let config = match env("XDG_CONFIG_HOME").filter(|p| Path::new(p).is_absolute()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env("HOME").filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(config.join("papertrader").join("session"))
}

/// Resolves the session file: the flag if given, else [`default_path`] of the process
/// environment.
pub fn resolve_path(flag: Option<&Path>) -> Result<PathBuf, ClientError> {
    match flag {
        Some(path) => Ok(path.to_path_buf()),
        None => default_path(|name| std::env::var(name).ok()).ok_or_else(|| {
            ClientError::Local(format!(
                "no place for the session file: set HOME, XDG_CONFIG_HOME or {ENV_SESSION_FILE}, \
                 or pass --session-file"
            ))
        }),
    }
}

/// The current time in unix seconds (0 if the clock is before 1970).
pub fn now_unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    // Hex digits only (`from_str_radix` alone would take a `+` sign).
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl SavedSession {
    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{HEADER}\nusername={}\nsession={}\nremember={}\nlast_used={}\n",
            self.username.as_str(),
            hex(self.session.as_bytes()),
            self.remember,
            self.last_used,
        );
        if let Some(worker) = &self.worker {
            text.push_str(&format!("worker={worker}\n"));
        }
        text
    }

    /// The worker the session was saved through, when it is not `worker`: a `bad_session`
    /// from `worker` then says nothing of the session's own PaperTrader.
    pub fn saved_elsewhere(&self, worker: &str) -> Option<&str> {
        self.worker.as_deref().filter(|saved| *saved != worker)
    }

    /// True when the session was saved without `--remember` and has not been used for more
    /// than [`SESSION_IDLE_SECS`] at `now` (unix seconds).
    pub fn idle_expired(&self, now: i64) -> bool {
        !self.remember && now.saturating_sub(self.last_used) > SESSION_IDLE_SECS
    }

    /// Parses the file's text; `None` when it is not a session file. `remember` and
    /// `last_used` may be absent (a hand-written file): the session is then treated as
    /// remembered.
    pub fn from_text(text: &str) -> Option<Self> {
        let mut username = None;
        let mut session = None;
        let mut remember = None;
        let mut last_used = None;
        let mut worker = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            match key.trim() {
                "username" => username = Some(Username::new(value).ok()?),
                "session" => session = Some(SessionId(unhex(value)?)),
                "remember" => remember = Some(value.parse::<bool>().ok()?),
                "last_used" => last_used = Some(value.parse::<i64>().ok()?),
                "worker" if !value.is_empty() && !value.chars().any(char::is_control) => {
                    worker = Some(value.to_owned());
                }
                _ => return None,
            }
        }
        Some(Self {
            username: username?,
            session: session?,
            remember: remember.unwrap_or(true),
            last_used: last_used.unwrap_or(0),
            worker,
        })
    }

    /// Reads the session file at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, ClientError> {
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ClientError::Local(format!("cannot read {}: {e}", path.display())));
            }
        };
        let not_a_session = || {
            ClientError::Local(format!(
                "{} is not a session file; remove it and run `pt login USER`",
                path.display()
            ))
        };
        let mut bytes = Vec::new();
        file.take(SESSION_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", path.display())))?;
        // Bytes that are not UTF-8 are not a session file either: the same advice.
        let text = String::from_utf8(bytes).map_err(|_| not_a_session())?;
        if text.len() as u64 > SESSION_FILE_BYTES_MAX {
            return Err(ClientError::Local(format!(
                "{} is not a session file (over {SESSION_FILE_BYTES_MAX} bytes)",
                path.display()
            )));
        }
        Self::from_text(&text).map(Some).ok_or_else(not_a_session)
    }

    /// Writes the session file at `path` with mode 0600 (creating its directory with mode
    /// 0700), replacing any previous one atomically.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let fail = |what: &str, e: std::io::Error| {
            ClientError::Local(format!("cannot {what} {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| fail("create the directory of", e))?;
        }
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let temp = path.with_file_name(format!(
            ".{}.tmp{}",
            file_name.unwrap_or_else(|| "session".to_owned()),
            std::process::id()
        ));
        let _ = fs::remove_file(&temp);
        let result = (|| {
            let mut file = open_private(&temp)?;
            file.write_all(self.to_text().as_bytes())?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(fail("write", e));
        }
        Ok(())
    }

    /// Removes the session file at `path`; true when there was one.
    pub fn remove(path: &Path) -> Result<bool, ClientError> {
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ClientError::Local(format!("cannot remove {}: {e}", path.display()))),
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The worker line round-trips, is optional (files written before it), and tells a worker
    /// elsewhere from the one the session was saved through.
    #[test]
    fn the_worker_of_the_login_is_kept() {
        let saved = SavedSession {
            username: Username::new("alice").unwrap(),
            session: SessionId([7; 32]),
            remember: false,
            last_used: 1_741_960_800,
            worker: Some("127.0.0.1:2049".to_owned()),
        };
        let text = saved.to_text();
        assert!(text.ends_with("worker=127.0.0.1:2049\n"), "{text}");
        assert_eq!(SavedSession::from_text(&text), Some(saved.clone()));
        assert_eq!(saved.saved_elsewhere("127.0.0.1:2049"), None);
        assert_eq!(saved.saved_elsewhere("127.0.0.1:3049"), Some("127.0.0.1:2049"));
        let older = text.replace("worker=127.0.0.1:2049\n", "");
        let older = SavedSession::from_text(&older).unwrap();
        assert_eq!(older.worker, None);
        assert_eq!(older.saved_elsewhere("127.0.0.1:3049"), None, "an older file: any worker");
        assert_eq!(SavedSession::from_text(&format!("{text}worker=\n")), None, "empty");
    }

    #[test]
    fn a_session_id_is_64_hex_digits_and_nothing_else() {
        let hex = "0a".repeat(32);
        assert_eq!(unhex(&hex), Some([0x0a; 32]));
        assert_eq!(unhex(&"+a".repeat(32)), None, "a sign is not a hex digit");
        assert_eq!(unhex(&hex[..62]), None);
        assert_eq!(unhex(&format!("{}zz", &hex[..62])), None);
    }
}
