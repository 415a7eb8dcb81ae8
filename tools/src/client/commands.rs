//! The client commands of `pt`: their arguments (clap) and what each sends.
//!
//! Each `run` returns the text to print on stdout (a table, or JSON with `--json`) or a
//! [`ClientError`] whose [`exit_code`](ClientError::exit_code) the binary uses.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use engine::{Email, Qty, Symbol, Timestamp, Username};
use net::{ConnState, DataPayload, Failure, Period, Reason, Request, Response, SessionId};

use super::password::{self, PasswordSource};
use super::session::{self, SavedSession};
use super::{
    Client, ClientError, ConnectConfig, ENV_MASTER, ENV_WORKER, MASTER_DEFAULT, WORKER_DEFAULT,
    render, unexpected,
};

/// The client commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// List the workers the master knows (asks the master).
    Workers(WorkersArgs),
    /// Create an account; the password is prompted for (or read with --password-stdin).
    Register(RegisterArgs),
    /// Log in and save the session for the next commands.
    Login(LoginArgs),
    /// End the saved session and remove the session file.
    Logout(CommonArgs),
    /// Buy an asset; waits for the settlement interval and prints the fill or the reason.
    Buy(TradeArgs),
    /// Sell an asset; waits for the settlement interval and prints the fill or the reason.
    Sell(TradeArgs),
    /// Cash and holdings, valued at the last prices (yours, or USER's: portfolios are public).
    Portfolio(OptionalUserArgs),
    /// Settled transactions, oldest first (yours, or USER's: histories are public).
    History(OptionalUserArgs),
    /// A user's account information.
    User(UserArgs),
    /// An asset's latest tick.
    Info(SymbolArgs),
    /// An asset's current price, or its prices over a range with a small chart.
    Price(PriceArgs),
}

/// Options of every command that talks to a worker.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The worker's address, `host:port`.
    #[arg(long, env = ENV_WORKER, default_value = WORKER_DEFAULT, value_name = "ADDR",
          value_parser = parse_address)]
    pub worker: String,
    /// The session file (default: `$XDG_CONFIG_HOME/papertrader/session` or
    /// `~/.config/papertrader/session`).
    #[arg(long, env = session::ENV_SESSION_FILE, value_name = "FILE")]
    pub session_file: Option<PathBuf>,
    /// Print JSON instead of tables (money as decimal strings, times in RFC 3339 UTC).
    #[arg(long)]
    pub json: bool,
    /// Longest wait for one answer (a trade waits for its settlement interval).
    #[arg(long, default_value = TIMEOUT_DEFAULT_TEXT, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl CommonArgs {
    fn connect_config(&self) -> ConnectConfig {
        ConnectConfig { addr: self.worker.clone(), role: "worker", timeout: self.timeout }
    }

    fn session_path(&self) -> Result<PathBuf, ClientError> {
        session::resolve_path(self.session_file.as_deref())
    }
}

/// `pt workers`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkersArgs {
    /// The master's address, `host:port`.
    #[arg(long, env = ENV_MASTER, default_value = MASTER_DEFAULT, value_name = "ADDR",
          value_parser = parse_address)]
    pub master: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Longest wait for the answer.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `pt register`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegisterArgs {
    /// The username: 1 to 24 letters, digits, `.`, `_`, `-` (starting with a letter or digit).
    #[arg(value_parser = parse_username)]
    pub username: Username,
    /// The email address.
    #[arg(value_parser = parse_email)]
    pub email: Email,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Connection, session and output options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `pt login`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// The username.
    #[arg(value_parser = parse_username)]
    pub username: Username,
    /// Keep the session for the master's remembered lifetime (30 days by default) instead of
    /// ending it after the idle timeout (30 minutes by default).
    #[arg(long)]
    pub remember: bool,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Connection, session and output options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `pt buy` and `pt sell`.
#[derive(Debug, Clone, clap::Args)]
pub struct TradeArgs {
    /// The asset's symbol (`AAPL`; lower case is accepted and upper-cased).
    #[arg(value_parser = parse_symbol)]
    pub symbol: Symbol,
    /// How much, a decimal with up to eight decimals (`10`, `0.5`).
    #[arg(value_parser = parse_qty, allow_negative_numbers = true)]
    pub qty: Qty,
    /// The order's idempotency key (default: random). Sending the same id again (same account)
    /// never orders twice: it is answered with the first attempt's outcome.
    #[arg(long, value_name = "ID", allow_negative_numbers = true, value_parser = parse_whole::<u64>)]
    pub client_order_id: Option<u64>,
    /// Connection, session and output options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `pt portfolio` and `pt history`.
#[derive(Debug, Clone, clap::Args)]
pub struct OptionalUserArgs {
    /// Whose (default: the logged-in user).
    #[arg(value_parser = parse_username)]
    pub username: Option<Username>,
    /// Connection, session and output options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `pt user`.
#[derive(Debug, Clone, clap::Args)]
pub struct UserArgs {
    /// Whose.
    #[arg(value_parser = parse_username)]
    pub username: Username,
    /// Connection, session and output options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `pt info`.
#[derive(Debug, Clone, clap::Args)]
pub struct SymbolArgs {
    /// The asset's symbol.
    #[arg(value_parser = parse_symbol)]
    pub symbol: Symbol,
    /// Connection, session and output options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The range of `pt price`: at most one.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(multiple = false)]
pub struct RangeArgs {
    /// 24 hours from DATE (`2010-06-01`, `2010-06-01T14:00:00Z` or `3days ago`).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub day: Option<Timestamp>,
    /// A week from DATE.
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub week: Option<Timestamp>,
    /// A month from DATE.
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub month: Option<Timestamp>,
    /// A year from DATE.
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub year: Option<Timestamp>,
    /// Every price the master has.
    #[arg(long)]
    pub all: bool,
}

impl RangeArgs {
    /// The request for `symbol`: the current value when no range is given.
    pub fn request(&self, symbol: Symbol) -> Request {
        let ranged = [
            (Period::Day, self.day),
            (Period::Week, self.week),
            (Period::Month, self.month),
            (Period::Year, self.year),
        ];
        if let Some((period, Some(date))) = ranged.into_iter().find(|(_, d)| d.is_some()) {
            return Request::GetAssetValue { symbol, period, date };
        }
        if self.all {
            Request::GetAssetValueAllTime { symbol }
        } else {
            Request::GetAssetValueCurrent { symbol }
        }
    }
}

/// The label of a ranged request (`week from 2010-06-01`, `all time`).
fn range_label(request: &Request) -> String {
    match request {
        Request::GetAssetValue { period, date, .. } => {
            let name = match period {
                Period::Day => "day",
                Period::Week => "week",
                Period::Month => "month",
                Period::Year => "year",
            };
            format!("{name} from {}", render::fmt_time(*date))
        }
        _ => "all time".to_owned(),
    }
}

/// `pt price`.
#[derive(Debug, Clone, clap::Args)]
pub struct PriceArgs {
    /// The asset's symbol.
    #[arg(value_parser = parse_symbol)]
    pub symbol: Symbol,
    /// The range; none: the current price.
    #[command(flatten)]
    pub range: RangeArgs,
    /// Rows of the price table under the chart (the latest bars); 0 shows every bar. Only with
    /// a range: the current price is one row.
    #[arg(long, default_value_t = 20, value_name = "N", allow_negative_numbers = true,
          value_parser = parse_whole::<usize>, requires = "RangeArgs")]
    pub rows: usize,
    /// Connection, session and output options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Parses a username argument.
pub fn parse_username(text: &str) -> Result<Username, String> {
    Username::new(text).map_err(|e| e.to_string())
}

/// Parses an email argument.
pub fn parse_email(text: &str) -> Result<Email, String> {
    Email::new(text).map_err(|e| e.to_string())
}

/// Parses a symbol argument; lower-case letters are upper-cased (`aapl` is `AAPL`).
pub fn parse_symbol(text: &str) -> Result<Symbol, String> {
    Symbol::new(&text.to_ascii_uppercase()).map_err(|e| e.to_string())
}

/// Parses a quantity: a positive decimal with at most eight decimals.
pub fn parse_qty(text: &str) -> Result<Qty, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!(
            "{text:?}: the quantity must be more than zero (pt buy buys it, pt sell sells it)"
        ));
    }
    let qty = Qty::parse(text).map_err(|e| format!("{text:?} is not a quantity: {e}"))?;
    if qty.is_zero() {
        return Err("the quantity must be more than zero".to_owned());
    }
    Ok(qty)
}

/// `--timeout`'s default: the longest wait for one answer.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// [`TIMEOUT_DEFAULT`] as `--timeout` takes it.
const TIMEOUT_DEFAULT_TEXT: &str = "5m";
/// The shortest `--timeout`: no answer can come in no time.
const TIMEOUT_MIN: Duration = Duration::from_millis(1);
/// The longest `--timeout`: a week.
const TIMEOUT_MAX: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Parses a `--timeout` (`30s`, `5m`): 1ms to 7 days.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_in(text, TIMEOUT_MIN..=TIMEOUT_MAX, "a timeout must be 1ms to 7 days")
}

/// Parses a duration written for humans that must lie in `range`; `rule` says which range, for
/// the error.
pub fn parse_duration_in(
    text: &str,
    range: std::ops::RangeInclusive<Duration>,
    rule: &str,
) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))?;
    if !range.contains(&duration) {
        return Err(format!("{text:?}: {rule}"));
    }
    Ok(duration)
}

/// Parses a date: `2010-06-01` (midnight UTC), or any time `pt-replay` takes
/// (`2010-06-01T14:00:00Z`, `2010-06-01 14:00:00`, `3days ago`).
pub fn parse_date(text: &str) -> Result<Timestamp, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text.trim(), &format) {
        return Timestamp::from_offset_date_time(date.midnight().assume_utc())
            .ok_or_else(|| format!("{text:?} is out of range"));
    }
    crate::replay::time::parse_time(text, SystemTime::now()).map_err(|_| {
        format!(
            "{text:?} is not a date: expected 2010-06-01 (midnight UTC), 2010-06-01T14:00:00Z, \
             \"2010-06-01 14:00:00\" (UTC) or \"3days ago\""
        )
    })
}

/// Parses a whole number, 0 or more, saying so when it is not one.
pub fn parse_whole<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{text:?} is not a whole number (0 or more)"))
}

/// Checks an address argument: `host:port`, the port a number (the host is resolved when
/// connecting), so that a missing port is a usage error naming the form.
pub fn parse_address(text: &str) -> Result<String, String> {
    let port = text.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() => Ok(text.to_owned()),
        _ => Err(format!(
            "{text:?} is not an address: expected HOST:PORT, like 127.0.0.1:2049 or \
             localhost:2049 ([::1]:2049 for IPv6)"
        )),
    }
}

/// Runs a client command; returns what to print.
pub async fn run(command: &ClientCommand) -> Result<String, ClientError> {
    match command {
        ClientCommand::Workers(args) => workers(args).await,
        ClientCommand::Register(args) => register(args).await,
        ClientCommand::Login(args) => login(args).await,
        ClientCommand::Logout(args) => logout(args).await,
        ClientCommand::Buy(args) => trade(args, engine::Side::Buy).await,
        ClientCommand::Sell(args) => trade(args, engine::Side::Sell).await,
        ClientCommand::Portfolio(args) => portfolio(args).await,
        ClientCommand::History(args) => history(args).await,
        ClientCommand::User(args) => user(args).await,
        ClientCommand::Info(args) => info(args).await,
        ClientCommand::Price(args) => price(args).await,
    }
}

fn password_source(from_stdin: bool) -> PasswordSource {
    if from_stdin { PasswordSource::Stdin } else { PasswordSource::Prompt }
}

async fn workers(args: &WorkersArgs) -> Result<String, ClientError> {
    let config = ConnectConfig { addr: args.master.clone(), role: "master", timeout: args.timeout };
    let mut client = Client::connect(config).await?;
    let request = Request::GetWorkers;
    match client.exchange(&request).await? {
        Response::Data(DataPayload::WorkerList(list)) => Ok(render::workers(&list, args.json)),
        other => Err(unexpected(&request, &other)),
    }
}

/// Before a password prompt, fails when the worker cannot be reached, so that nobody types a
/// password (twice, to register) for nothing. The connection is dropped: typing may take longer
/// than the worker waits for a first request. A password read from stdin is checked first
/// instead (a bad new one is a usage error, whatever the worker).
async fn check_reachable(common: &CommonArgs, source: &PasswordSource) -> Result<(), ClientError> {
    if matches!(source, PasswordSource::Prompt) {
        Client::connect(common.connect_config()).await?;
    }
    Ok(())
}

async fn register(args: &RegisterArgs) -> Result<String, ClientError> {
    let source = password_source(args.password_stdin);
    check_reachable(&args.common, &source).await?;
    let password = password::read_new_password(source)?;
    let request = Request::Register {
        username: args.username.clone(),
        email: args.email.clone(),
        password: password::hash_password(&args.username, &password)?,
    };
    let mut client = Client::connect(args.common.connect_config()).await?;
    match client.exchange(&request).await? {
        Response::RegisterSuccess => {
            Ok(render::registered(&args.username, args.email.as_str(), args.common.json))
        }
        other => Err(unexpected(&request, &other)),
    }
}

async fn login(args: &LoginArgs) -> Result<String, ClientError> {
    let path = args.common.session_path()?;
    let source = password_source(args.password_stdin);
    check_reachable(&args.common, &source).await?;
    let password = password::read_password(source)?;
    // Always a remembered session on the wire: the next `pt` command is another connection, and
    // a worker ends an expirable session with its connection. Without --remember the client
    // applies the idle limit itself (see `session`).
    let request = Request::Login {
        username: args.username.clone(),
        password: password::hash_password(&args.username, &password)?,
        expirable: false,
    };
    let mut client = Client::connect(args.common.connect_config()).await?;
    let session = match client.exchange(&request).await? {
        Response::SessionId(session) => session,
        other => return Err(unexpected(&request, &other)),
    };
    let saved = SavedSession {
        username: args.username.clone(),
        session,
        remember: args.remember,
        last_used: session::now_unix_secs(),
        worker: Some(args.common.worker.clone()),
    };
    if let Err(saving) = saved.save(&path) {
        // The master made a 30-day session whose id no one will ever see: nothing could use it
        // or end it. End it now.
        let ended = matches!(
            client.exchange(&Request::Logout { session }).await,
            Ok(Response::LogoutSuccess)
        );
        let what = if ended {
            "the session was ended"
        } else {
            "the session could not be ended and stays valid on the server until it expires"
        };
        return Err(ClientError::Local(format!("{saving}; not logged in: {what}")));
    }
    Ok(render::logged_in(
        &args.username,
        args.remember,
        &path.display().to_string(),
        args.common.json,
    ))
}

/// A connection logged in with the saved session.
struct LoggedIn {
    client: Client,
    saved: SavedSession,
    state: ConnState,
}

impl LoggedIn {
    /// Loads the session file, connects and sends `loginSession`. A session saved without
    /// `--remember` and idle for too long is ended instead, and the file removed.
    async fn open(common: &CommonArgs) -> Result<Self, ClientError> {
        let path = common.session_path()?;
        let mut saved = SavedSession::load(&path)?
            .ok_or_else(|| ClientError::NotLoggedIn { path: path.display().to_string() })?;
        let mut client = Client::connect(common.connect_config()).await?;
        let now = session::now_unix_secs();
        if saved.idle_expired(now) {
            // Best effort: the session is over either way.
            if resume(&mut client, &saved, &common.worker).await.is_ok() {
                let _ = client.exchange(&Request::Logout { session: saved.session }).await;
            }
            remove_session(&path)?;
            return Err(ClientError::SessionExpired { username: saved.username.to_string() });
        }
        if let Err(e) = resume(&mut client, &saved, &common.worker).await {
            if e.reason() == Some(Reason::BadSession)
                && saved.saved_elsewhere(&common.worker).is_none()
            {
                // Session ids are never reused: this one is dead for good.
                remove_session(&path)?;
            }
            return Err(e);
        }
        if !saved.remember {
            saved.last_used = now;
            saved.save(&path)?;
        }
        Ok(Self { client, saved, state: ConnState::Command })
    }

    fn session(&self) -> SessionId {
        self.saved.session
    }

    /// Switches the connection to `state` if it is not there yet.
    async fn switch(&mut self, state: ConnState) -> Result<(), ClientError> {
        if self.state == state {
            return Ok(());
        }
        let request = Request::SwitchState { session: self.session(), state };
        match self.client.exchange(&request).await? {
            Response::StateSwitchSuccess(now) if now == state => {
                self.state = state;
                Ok(())
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Sends a `get...` (in data transfer state) and returns its payload.
    async fn get(&mut self, request: Request) -> Result<DataPayload, ClientError> {
        self.switch(ConnState::DataTransfer).await?;
        match self.client.exchange(&request).await? {
            Response::Data(payload) => Ok(payload),
            other => Err(unexpected(&request, &other)),
        }
    }
}

/// Sends `loginSession` through `worker`; a session the master no longer knows is reported
/// with a hint, one saved through another worker (kept: this may be another PaperTrader) with
/// that worker's address.
async fn resume(
    client: &mut Client,
    saved: &SavedSession,
    worker: &str,
) -> Result<(), ClientError> {
    let request = Request::LoginSession { session: saved.session };
    match client.exchange(&request).await {
        Ok(Response::SessionId(session)) if session == saved.session => Ok(()),
        Ok(other) => Err(unexpected(&request, &other)),
        Err(ClientError::Refused { failure, .. }) if failure.reason == Reason::BadSession => {
            let message = match saved.saved_elsewhere(worker) {
                Some(login_worker) => format!(
                    "{}; the saved session of {} was made through the worker at \
                     {login_worker}, not {worker}: if that is another PaperTrader, the session \
                     is kept for it (use --worker {login_worker}); if not, it has ended: `pt \
                     login {}` again, or `pt logout` to forget it",
                    failure.message, saved.username, saved.username
                ),
                // The worker's message already says to log in: name the command only.
                None if failure.message.contains("log in") => {
                    format!("{} (`pt login {}`)", failure.message, saved.username)
                }
                None => format!("{}; run `pt login {}` again", failure.message, saved.username),
            };
            Err(ClientError::Refused {
                what: "session",
                failure: Failure::new(failure.reason, message),
            })
        }
        Err(e) => Err(e),
    }
}

async fn logout(common: &CommonArgs) -> Result<String, ClientError> {
    let path = common.session_path()?;
    let Some(saved) = SavedSession::load(&path)? else {
        return Err(ClientError::NotLoggedIn { path: path.display().to_string() });
    };
    let mut unknown_elsewhere = None;
    let ended = match end_session(&saved, common.connect_config()).await? {
        Ended::Now => true,
        Ended::Before => match saved.saved_elsewhere(&common.worker) {
            // Not known to this worker's master: maybe another PaperTrader's session. Ended
            // through the worker it was saved through, if that one is there and knows it.
            Some(home) => {
                // A short wait: the user asked another worker, and this one may be gone.
                let config = ConnectConfig {
                    addr: home.to_owned(),
                    timeout: common.timeout.min(HOME_LOGOUT_TIMEOUT),
                    ..common.connect_config()
                };
                if matches!(end_session(&saved, config).await, Ok(Ended::Now)) {
                    true
                } else {
                    unknown_elsewhere = Some(home);
                    false
                }
            }
            None => false,
        },
    };
    remove_session(&path)?;
    Ok(render::logged_out(&saved.username, ended, unknown_elsewhere, common.json))
}

/// The longest wait for each answer when `pt logout` tries the worker a session was saved
/// through, after the worker asked did not know it.
const HOME_LOGOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `pt logout` ended a session, or found it ended.
enum Ended {
    /// Ended by this logout.
    Now,
    /// The master did not know it (ended earlier, by expiry, or another master's).
    Before,
}

/// Resumes `saved` through the worker of `config` and logs it out there.
async fn end_session(saved: &SavedSession, config: ConnectConfig) -> Result<Ended, ClientError> {
    let worker = config.addr.clone();
    let mut client = Client::connect(config).await?;
    match resume(&mut client, saved, &worker).await {
        Ok(()) => {
            let request = Request::Logout { session: saved.session };
            match client.exchange(&request).await {
                Ok(Response::LogoutSuccess) => Ok(Ended::Now),
                Ok(other) => Err(unexpected(&request, &other)),
                // Ended meanwhile (elsewhere, or by expiry): there is nothing left to end.
                Err(e) if e.reason() == Some(Reason::BadSession) => Ok(Ended::Before),
                Err(e) => Err(e),
            }
        }
        // The master no longer knows the session: there is nothing left to end.
        Err(e) if e.reason() == Some(Reason::BadSession) => Ok(Ended::Before),
        Err(e) => Err(e),
    }
}

fn remove_session(path: &Path) -> Result<(), ClientError> {
    SavedSession::remove(path).map(|_| ())
}

/// An order's failure whose outcome is unknown, with the client order id that gets the outcome
/// without ordering twice (the id is random unless given, so the user has no other way to know
/// it): a timeout or a broken connection (the worker may have lost the master's answer),
/// `master_unavailable` (the master could not tell), or `internal` (its storage failed during
/// the commit). Other failures are returned as they are.
fn with_outcome_hint(error: ClientError, client_order_id: u64) -> ClientError {
    let unknown = match &error {
        ClientError::Timeout { .. } | ClientError::Connection { .. } => true,
        ClientError::Refused { failure, .. } => {
            matches!(failure.reason, Reason::MasterUnavailable | Reason::Internal)
        }
        _ => false,
    };
    if !unknown {
        return error;
    }
    ClientError::Local(format!(
        "{error}; the order may still settle: run the same command with --client-order-id \
         {client_order_id} to get its outcome without ordering twice"
    ))
}

async fn trade(args: &TradeArgs, side: engine::Side) -> Result<String, ClientError> {
    let client_order_id = match args.client_order_id {
        Some(id) => id,
        None => getrandom::u64().map_err(|e| {
            ClientError::Local(format!("cannot draw a random client order id: {e}"))
        })?,
    };
    let mut conn = LoggedIn::open(&args.common).await?;
    // This machine's clock at the command's start, to compare the fill's settlement with.
    let began = Timestamp::from_offset_date_time(time::OffsetDateTime::now_utc());
    let (session, symbol, qty) = (conn.session(), args.symbol, args.qty);
    let request = match side {
        engine::Side::Buy => Request::Purchase { session, symbol, qty, client_order_id },
        engine::Side::Sell => Request::Sell { session, symbol, qty, client_order_id },
    };
    let response =
        conn.client.exchange(&request).await.map_err(|e| with_outcome_hint(e, client_order_id))?;
    match response {
        Response::PurchaseSuccess(fill) | Response::SellSuccess(fill)
            if fill.side == side && fill.symbol == symbol && fill.qty == qty =>
        {
            // Two clocks: the master's stamps the fill, this machine's the command. Only facts
            // are said (the fill's time by the master's clock came first); a master's clock
            // running behind can make that true of a fill this very command caused.
            let earlier = args.client_order_id.is_some()
                && began.is_some_and(|began| fill.settled_at.0 < began.0 - 1_000_000);
            Ok(render::fill(&fill, earlier, args.common.json))
        }
        // The id was used before for another order and a master of an earlier version sent
        // that order's fill (today's master refuses with invalid_argument, saying so).
        Response::PurchaseSuccess(fill) | Response::SellSuccess(fill) => {
            Err(ClientError::Local(format!(
                "client order id {client_order_id} was already used for order {} ({} {} {}); \
                 this order was not placed: use another id",
                fill.order, fill.side, fill.qty, fill.symbol
            )))
        }
        other => Err(unexpected(&request, &other)),
    }
}

async fn portfolio(args: &OptionalUserArgs) -> Result<String, ClientError> {
    let mut conn = LoggedIn::open(&args.common).await?;
    let username = args.username.clone().unwrap_or_else(|| conn.saved.username.clone());
    let request = Request::GetUserPortfolio { session: conn.session(), username: username.clone() };
    match conn.get(request.clone()).await? {
        DataPayload::Portfolio(p) => Ok(render::portfolio(&username, &p, args.common.json)),
        other => Err(unexpected(&request, &Response::Data(other))),
    }
}

async fn history(args: &OptionalUserArgs) -> Result<String, ClientError> {
    let mut conn = LoggedIn::open(&args.common).await?;
    let username = args.username.clone().unwrap_or_else(|| conn.saved.username.clone());
    let request =
        Request::GetUserTransactionHistory { session: conn.session(), username: username.clone() };
    match conn.get(request.clone()).await? {
        DataPayload::TransactionHistory { entries, older } => {
            Ok(render::history(&username, &entries, older, args.common.json))
        }
        other => Err(unexpected(&request, &Response::Data(other))),
    }
}

async fn user(args: &UserArgs) -> Result<String, ClientError> {
    let mut conn = LoggedIn::open(&args.common).await?;
    let request = Request::GetUserInfo { session: conn.session(), username: args.username.clone() };
    match conn.get(request.clone()).await? {
        DataPayload::UserInfo(info) => Ok(render::user(&info, args.common.json)),
        other => Err(unexpected(&request, &Response::Data(other))),
    }
}

async fn info(args: &SymbolArgs) -> Result<String, ClientError> {
    let mut conn = LoggedIn::open(&args.common).await?;
    let request = Request::GetAssetInfo { symbol: args.symbol };
    match conn.get(request.clone()).await? {
        DataPayload::AssetInfo(tick) => Ok(render::tick(&tick, args.common.json)),
        other => Err(unexpected(&request, &Response::Data(other))),
    }
}

async fn price(args: &PriceArgs) -> Result<String, ClientError> {
    let request = args.range.request(args.symbol);
    // Checked before anything is sent, by the master's own rule: a period that ends past the
    // last representable time.
    if let Request::GetAssetValue { period, date, .. } = &request
        && master::history::range(*period, *date).is_none()
    {
        return Err(ClientError::Usage(format!(
            "the {} is out of range: it ends past the last time the master can store",
            range_label(&request)
        )));
    }
    let mut conn = LoggedIn::open(&args.common).await?;
    match conn.get(request.clone()).await? {
        DataPayload::AssetInfo(tick) => Ok(render::tick(&tick, args.common.json)),
        DataPayload::PriceSeries(series) => {
            Ok(render::series(&series, &range_label(&request), args.rows, args.common.json))
        }
        other => Err(unexpected(&request, &Response::Data(other))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A failure that leaves the order's outcome unknown names the client order id to get it
    /// with; a refusal that decided the order does not.
    #[test]
    fn an_unknown_outcome_names_the_client_order_id() {
        let refused = |reason| ClientError::Refused {
            what: "purchase",
            failure: Failure::new(reason, "the server's words"),
        };
        for unknown in [refused(Reason::Internal), refused(Reason::MasterUnavailable)] {
            let text = with_outcome_hint(unknown, 4242).to_string();
            assert!(text.contains("--client-order-id 4242"), "{text}");
            assert!(text.contains("the server's words"), "{text}");
        }
        let decided = with_outcome_hint(refused(Reason::InvalidArgument), 4242).to_string();
        assert!(!decided.contains("4242"), "{decided}");
    }

    #[test]
    fn the_default_timeout_text_is_the_default_timeout() {
        assert_eq!(parse_duration(TIMEOUT_DEFAULT_TEXT), Ok(TIMEOUT_DEFAULT));
    }
}
