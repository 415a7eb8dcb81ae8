//! The `pt` client: connections to a worker (or the master, for `getWorkers`), the session,
//! and the commands.
//!
//! Every command opens one TCP connection, sends its requests one at a time and reads each
//! answer before the next (the protocol answers in order). A command that needs a session first
//! sends `loginSession` with the saved session id; the `get...` commands then switch the
//! connection to data transfer state (`switchState`), as `docs/PROTOCOL.md` section 9 requires.
//! `docs/CLIENT.md` is the user's guide.
//!
//! Architecture invariant: nothing here prints; commands return their output as text (a table
//! or JSON) and the binary prints it. Errors carry what the exit code needs.

pub mod commands;
pub mod password;
pub mod render;
pub mod session;

use std::net::SocketAddr;
use std::time::Duration;

use net::{Failure, FramedStream, Reason, Request, Response};
use tokio::net::TcpStream;

/// Default worker address (spec 4.3.2).
pub const WORKER_DEFAULT: &str = "127.0.0.1:2049";
/// Default master address (spec 4.3.1).
pub const MASTER_DEFAULT: &str = "127.0.0.1:2048";
/// Environment variable with the worker address.
pub const ENV_WORKER: &str = "PT_WORKER";
/// Environment variable with the master address.
pub const ENV_MASTER: &str = "PT_MASTER";
/// Longest wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most attempts of one request answered with a retryable reason (`busy`,
/// `master_unavailable`).
pub const RETRYABLE_ATTEMPTS_MAX: u32 = 4;
/// Wait before the first retry; doubled before each next one.
pub const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(250);

/// Why a command failed. [`ClientError::exit_code`] maps it to the process exit status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request: its reason code and message.
    #[error("{what} refused: {} ({}): {}", failure.reason.name(), failure.reason.code(), failure.message)]
    Refused {
        /// What was refused (`login`, `purchase`...).
        what: &'static str,
        /// The server's reason.
        failure: Failure,
    },
    /// The TCP connection could not be made.
    #[error("cannot reach {role} at {addr}: {reason}")]
    Connect {
        /// `worker` or `master`.
        role: &'static str,
        /// The address tried.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection failed or the peer broke the protocol after connecting.
    #[error("connection to {addr} failed: {reason}")]
    Connection {
        /// The peer.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("no answer from {addr} to {what} within {}", humantime::format_duration(*timeout))]
    Timeout {
        /// The peer.
        addr: String,
        /// The request.
        what: &'static str,
        /// The wait.
        timeout: Duration,
    },
    /// The peer answered with a return that does not fit the request.
    #[error("unexpected answer to {what}: {got}")]
    Unexpected {
        /// The request.
        what: &'static str,
        /// The instruction received.
        got: String,
    },
    /// The command needs a session and there is none saved.
    #[error("not logged in (no session in {path}); run `pt login USER` first")]
    NotLoggedIn {
        /// The session file looked at.
        path: String,
    },
    /// The saved session was not used for longer than the idle limit; it has been ended.
    #[error(
        "the session of {username} ended after {} minutes without use; run `pt login {username}` \
         again (--remember keeps a session for 30 days)",
        session::SESSION_IDLE_SECS / 60
    )]
    SessionExpired {
        /// Whose session.
        username: String,
    },
    /// A wrong argument that clap could not check (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// Something local failed (a file, the terminal).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The exit status: 2 for usage errors, 1 for everything else (refusals, connection
    /// failures, local failures).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }

    /// The server's reason, for a refusal.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Refused { failure, .. } => Some(failure.reason),
            _ => None,
        }
    }
}

/// Options of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// `host:port`.
    pub addr: String,
    /// `worker` or `master`, for messages.
    pub role: &'static str,
    /// Longest wait for one answer (a purchase waits for its settlement interval).
    pub timeout: Duration,
}

/// One open connection to a worker or the master.
#[derive(Debug)]
pub struct Client {
    stream: FramedStream<TcpStream>,
    config: ConnectConfig,
    /// Whether the server has answered anything on this connection yet: an `error` with `busy`
    /// as the first answer is a worker refusing the connection itself (it closes it).
    answered: bool,
}

/// Whether `request` may be sent again after an answer that leaves its outcome unknown
/// (`master_unavailable`: the link to the master may have gone down after the master did it).
/// Reads and state switches change nothing, and an order carries its client order id, so
/// sending it again returns the first attempt's outcome. A registration, a login (a new
/// session each time) and a logout are not repeated: the second attempt would answer
/// `username_taken` or `bad_session` for what the first one did, or leave a session behind.
pub fn safe_to_repeat(request: &Request) -> bool {
    !matches!(request, Request::Register { .. } | Request::Login { .. } | Request::Logout { .. })
}

/// The short name of a request, for messages.
pub fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Login { .. } | Request::LoginSession { .. } => "login",
        Request::Register { .. } => "register",
        Request::Purchase { .. } => "purchase",
        Request::Sell { .. } => "sale",
        Request::SwitchState { .. } => "state switch",
        Request::Logout { .. } => "logout",
        Request::GetWorkers => "worker list",
        Request::GetAssetInfo { .. }
        | Request::GetAssetValueCurrent { .. }
        | Request::GetAssetValue { .. }
        | Request::GetAssetValueAllTime { .. } => "price request",
        Request::GetUserInfo { .. } => "user request",
        Request::GetUserPortfolio { .. } => "portfolio request",
        Request::GetUserTransactionHistory { .. } => "history request",
    }
}

impl Client {
    /// Connects to `config.addr` (a `host:port`; names are resolved).
    pub async fn connect(config: ConnectConfig) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            role: config.role,
            addr: config.addr.clone(),
            reason,
        };
        let connect = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(config.addr.as_str())
                .await
                .map_err(|e| format!("cannot resolve the address: {e}"))?
                .collect();
            let mut last = String::from("the name resolves to no address");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    // Nothing listens there: usually no `pt up` running, or one on other ports.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        let (flag, var) = match config.role {
                            "master" => ("--master", ENV_MASTER),
                            _ => ("--worker", ENV_WORKER),
                        };
                        last = format!(
                            "{e}; is a PaperTrader running there (`pt up` starts one and prints \
                             its addresses)? Otherwise pass {flag} ADDR or set {var}"
                        );
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(reason)) => return Err(fail(reason)),
            Err(_) => {
                return Err(fail(format!(
                    "timed out after {}",
                    humantime::format_duration(CONNECT_TIMEOUT)
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(Self { stream: FramedStream::new(stream), config, answered: false })
    }

    /// The peer's address as given.
    pub fn addr(&self) -> &str {
        &self.config.addr
    }

    /// Sends one request and reads its answer, once.
    pub async fn exchange_once(&mut self, request: &Request) -> Result<Response, ClientError> {
        let what = request_name(request);
        let broken =
            |reason: String| ClientError::Connection { addr: self.config.addr.clone(), reason };
        self.stream.write_request(request).await.map_err(|e| broken(e.to_string()))?;
        match tokio::time::timeout(self.config.timeout, self.stream.read_response()).await {
            Ok(Ok(Some(response))) => {
                self.answered = true;
                Ok(response)
            }
            Ok(Ok(None)) => Err(broken("the server closed the connection".to_owned())),
            Ok(Err(e)) => Err(broken(e.to_string())),
            Err(_) => Err(ClientError::Timeout {
                addr: self.config.addr.clone(),
                what,
                timeout: self.config.timeout,
            }),
        }
    }

    /// Sends one request and reads its answer, retrying (with a doubling wait, at most
    /// [`RETRYABLE_ATTEMPTS_MAX`] attempts) while the answer is a failure with a retryable
    /// reason: `busy` (nothing was done) always, `master_unavailable` only for a request that
    /// is [`safe_to_repeat`]. A worker that refuses the connection itself (`error` with `busy`
    /// as its first answer) has closed it: the retry goes on a new connection. A `...Fail` or
    /// `error` answer becomes [`ClientError::Refused`].
    pub async fn exchange(&mut self, request: &Request) -> Result<Response, ClientError> {
        let mut backoff = RETRY_BACKOFF_FIRST;
        let mut attempt = 1;
        loop {
            let fresh = !self.answered;
            let response = self.exchange_once(request).await?;
            let refused_at_the_door =
                fresh && matches!(&response, Response::Error(f) if f.reason == Reason::Busy);
            match response.failure() {
                None => return Ok(response),
                Some(failure)
                    if attempt < RETRYABLE_ATTEMPTS_MAX
                        && (failure.reason == Reason::Busy
                            || (failure.reason == Reason::MasterUnavailable
                                && safe_to_repeat(request))) =>
                {
                    tracing::debug!(reason = %failure.reason, attempt, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                    if refused_at_the_door {
                        *self = Self::connect(self.config.clone()).await?;
                    }
                }
                Some(failure) => {
                    return Err(ClientError::Refused {
                        what: request_name(request),
                        failure: failure.clone(),
                    });
                }
            }
        }
    }
}

/// The error for an answer that is not one `request` can get.
pub fn unexpected(request: &Request, response: &Response) -> ClientError {
    ClientError::Unexpected { what: request_name(request), got: response.instruction().to_string() }
}
