//! Requests: what a client sends to a worker (and a worker relays to the master), and
//! `getWorkers`, which a client sends to the master.

use engine::limits::{EMAIL_CHARS_MAX, SYMBOL_CHARS_MAX, USERNAME_CHARS_MAX};
use engine::{Email, Qty, Symbol, Timestamp, Username};

use crate::args::{ArgReader, ArgWriter};
use crate::error::{DecodeError, EncodeError};
use crate::frame::MessageType;
use crate::instruction::Instruction;
use crate::limits::{HASHED_PASSWORD_BYTES_MAX, HASHED_PASSWORD_BYTES_MIN};
use crate::message::Message;
use crate::response::Response;
use crate::types::{ConnState, Failure, HashedPassword, Period, SessionId};

/// A client's request: the command-state (spec 4.5.1) and data-transfer-state (spec 4.5.2)
/// instructions, plus `logout` and `getWorkers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `login(username, hashedPass, isExpirable)`.
    Login {
        /// The account's username (not its email).
        username: Username,
        /// The client's hash of the password.
        password: HashedPassword,
        /// True: the session ends when the client disconnects; false: it is remembered.
        expirable: bool,
    },
    /// `login(sessionID)`: resume a session on this connection.
    LoginSession {
        /// The session to resume.
        session: SessionId,
    },
    /// `register(username, email, hashedPass)`.
    Register {
        /// The new account's username.
        username: Username,
        /// Its email address.
        email: Email,
        /// The client's hash of the password.
        password: HashedPassword,
    },
    /// `purchaseAsset(sessionID, name, quantity)`.
    Purchase {
        /// The caller's session.
        session: SessionId,
        /// The asset.
        symbol: Symbol,
        /// How much.
        qty: Qty,
        /// The client's id for this order: a retry with the same id (same account) is not
        /// filled twice but answered with the first attempt's outcome.
        client_order_id: u64,
    },
    /// `sellAsset(sessionID, name, quantity)`.
    Sell {
        /// The caller's session.
        session: SessionId,
        /// The asset.
        symbol: Symbol,
        /// How much.
        qty: Qty,
        /// The client's id for this order: a retry with the same id (same account) is not
        /// filled twice but answered with the first attempt's outcome.
        client_order_id: u64,
    },
    /// `switchState(sessionID, state)`.
    SwitchState {
        /// The caller's session.
        session: SessionId,
        /// The state to switch to.
        state: ConnState,
    },
    /// `logout(sessionID)`.
    Logout {
        /// The session to end.
        session: SessionId,
    },
    /// `getWorkers()`, sent to the master.
    GetWorkers,
    /// `getAssetInfo(asset)`.
    GetAssetInfo {
        /// The asset.
        symbol: Symbol,
    },
    /// `getAssetValueCurrent(asset)`.
    GetAssetValueCurrent {
        /// The asset.
        symbol: Symbol,
    },
    /// `getAssetValueDay/Week/Month/Year(asset, date)`.
    GetAssetValue {
        /// The asset.
        symbol: Symbol,
        /// Which span (selects the instruction).
        period: Period,
        /// The date the span starts from.
        date: Timestamp,
    },
    /// `getAssetValueAllTime(asset)`.
    GetAssetValueAllTime {
        /// The asset.
        symbol: Symbol,
    },
    /// `getUserInfo(sessionID, username)`.
    GetUserInfo {
        /// The caller's session.
        session: SessionId,
        /// Whose information.
        username: Username,
    },
    /// `getUserPortfolio(sessionID, username)`.
    GetUserPortfolio {
        /// The caller's session.
        session: SessionId,
        /// Whose portfolio.
        username: Username,
    },
    /// `getUserTransactionHistory(sessionID, username)`.
    GetUserTransactionHistory {
        /// The caller's session.
        session: SessionId,
        /// Whose history.
        username: Username,
    },
}

impl Request {
    /// The instruction.
    pub fn instruction(&self) -> Instruction {
        use Instruction as I;
        match self {
            Self::Login { .. } => I::Login,
            Self::LoginSession { .. } => I::LoginSession,
            Self::Register { .. } => I::Register,
            Self::Purchase { .. } => I::PurchaseAsset,
            Self::Sell { .. } => I::SellAsset,
            Self::SwitchState { .. } => I::SwitchState,
            Self::Logout { .. } => I::Logout,
            Self::GetWorkers => I::GetWorkers,
            Self::GetAssetInfo { .. } => I::GetAssetInfo,
            Self::GetAssetValueCurrent { .. } => I::GetAssetValueCurrent,
            Self::GetAssetValue { period: Period::Day, .. } => I::GetAssetValueDay,
            Self::GetAssetValue { period: Period::Week, .. } => I::GetAssetValueWeek,
            Self::GetAssetValue { period: Period::Month, .. } => I::GetAssetValueMonth,
            Self::GetAssetValue { period: Period::Year, .. } => I::GetAssetValueYear,
            Self::GetAssetValueAllTime { .. } => I::GetAssetValueAllTime,
            Self::GetUserInfo { .. } => I::GetUserInfo,
            Self::GetUserPortfolio { .. } => I::GetUserPortfolio,
            Self::GetUserTransactionHistory { .. } => I::GetUserTransactionHistory,
        }
    }

    /// The session id the request carries, if it carries one.
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Self::LoginSession { session }
            | Self::Purchase { session, .. }
            | Self::Sell { session, .. }
            | Self::SwitchState { session, .. }
            | Self::Logout { session }
            | Self::GetUserInfo { session, .. }
            | Self::GetUserPortfolio { session, .. }
            | Self::GetUserTransactionHistory { session, .. } => Some(*session),
            _ => None,
        }
    }

    /// The return that reports a failure of this request: `loginFail` for a login,
    /// `purchaseFail` for a purchase, `dataFail` for any `get...`, and so on.
    pub fn fail(&self, failure: Failure) -> Response {
        Response::failure_for(self.instruction().code(), failure)
    }

    /// Encodes the request as a message.
    pub fn encode(&self) -> Result<Message, EncodeError> {
        let mut w = ArgWriter::new();
        self.write(&mut w);
        let instruction = self.instruction();
        w.finish(instruction.message_type(), instruction.code())
    }

    pub(crate) fn write(&self, w: &mut ArgWriter) {
        let password = |w: &mut ArgWriter, p: &HashedPassword| {
            w.bytes(
                "hashedPass",
                p.as_bytes(),
                HASHED_PASSWORD_BYTES_MIN,
                HASHED_PASSWORD_BYTES_MAX,
            )
        };
        match self {
            Self::Login { username, password: pass, expirable } => {
                w.text("username", username.as_str(), USERNAME_CHARS_MAX);
                password(w, pass);
                w.bool(*expirable);
            }
            Self::LoginSession { session } | Self::Logout { session } => w.id32(&session.0),
            Self::Register { username, email, password: pass } => {
                w.text("username", username.as_str(), USERNAME_CHARS_MAX);
                w.text("email", email.as_str(), EMAIL_CHARS_MAX);
                password(w, pass);
            }
            Self::Purchase { session, symbol, qty, client_order_id }
            | Self::Sell { session, symbol, qty, client_order_id } => {
                w.id32(&session.0);
                w.text("symbol", symbol.as_str(), SYMBOL_CHARS_MAX);
                w.u64(qty.raw());
                w.u64(*client_order_id);
            }
            Self::SwitchState { session, state } => {
                w.id32(&session.0);
                w.u16(state.code());
            }
            Self::GetWorkers => {}
            Self::GetAssetInfo { symbol }
            | Self::GetAssetValueCurrent { symbol }
            | Self::GetAssetValueAllTime { symbol } => {
                w.text("symbol", symbol.as_str(), SYMBOL_CHARS_MAX);
            }
            Self::GetAssetValue { symbol, period: _, date } => {
                w.text("symbol", symbol.as_str(), SYMBOL_CHARS_MAX);
                w.i64(date.micros());
            }
            Self::GetUserInfo { session, username }
            | Self::GetUserPortfolio { session, username }
            | Self::GetUserTransactionHistory { session, username } => {
                w.id32(&session.0);
                w.text("username", username.as_str(), USERNAME_CHARS_MAX);
            }
        }
    }

    /// Decodes a request: the instruction must be a request's, the argument count its own, and
    /// every argument well-formed and within its limits.
    pub fn decode(message: &Message) -> Result<Self, DecodeError> {
        let mut r = ArgReader::new(&message.body);
        let request =
            Self::read(message.message_type, message.instruction, message.arg_count, &mut r)?;
        r.finish()?;
        Ok(request)
    }

    pub(crate) fn read(
        message_type: MessageType,
        code: u16,
        arg_count: u16,
        r: &mut ArgReader<'_>,
    ) -> Result<Self, DecodeError> {
        use Instruction as I;
        let instruction = Instruction::check_header(
            message_type,
            code,
            arg_count,
            Instruction::is_request,
            "request",
        )?;
        let session = |r: &mut ArgReader<'_>| r.id32("sessionID").map(SessionId);
        let symbol = |r: &mut ArgReader<'_>| r.name("symbol", SYMBOL_CHARS_MAX, Symbol::new);
        let username =
            |r: &mut ArgReader<'_>| r.name("username", USERNAME_CHARS_MAX, Username::new);
        let password = |r: &mut ArgReader<'_>| {
            let field = r.next_field();
            let bytes =
                r.bytes("hashedPass", HASHED_PASSWORD_BYTES_MIN, HASHED_PASSWORD_BYTES_MAX)?;
            HashedPassword::new(bytes.to_vec()).map_err(|e| DecodeError::TooLong {
                field,
                what: "hashedPass",
                len: e.len,
                max: e.max,
            })
        };
        let period = |r: &mut ArgReader<'_>, period| -> Result<Self, DecodeError> {
            Ok(Self::GetAssetValue { symbol: symbol(r)?, period, date: Timestamp(r.i64("date")?) })
        };
        Ok(match instruction {
            I::Login => Self::Login {
                username: username(r)?,
                password: password(r)?,
                expirable: r.bool("isExpirable")?,
            },
            I::LoginSession => Self::LoginSession { session: session(r)? },
            I::Register => Self::Register {
                username: username(r)?,
                email: r.name("email", EMAIL_CHARS_MAX, Email::new)?,
                password: password(r)?,
            },
            I::PurchaseAsset => Self::Purchase {
                session: session(r)?,
                symbol: symbol(r)?,
                qty: Qty::from_raw(r.u64("quantity")?),
                client_order_id: r.u64("clientOrderId")?,
            },
            I::SellAsset => Self::Sell {
                session: session(r)?,
                symbol: symbol(r)?,
                qty: Qty::from_raw(r.u64("quantity")?),
                client_order_id: r.u64("clientOrderId")?,
            },
            I::SwitchState => Self::SwitchState {
                session: session(r)?,
                state: r.code("state", ConnState::from_code)?,
            },
            I::Logout => Self::Logout { session: session(r)? },
            I::GetWorkers => Self::GetWorkers,
            I::GetAssetInfo => Self::GetAssetInfo { symbol: symbol(r)? },
            I::GetAssetValueCurrent => Self::GetAssetValueCurrent { symbol: symbol(r)? },
            I::GetAssetValueDay => period(r, Period::Day)?,
            I::GetAssetValueWeek => period(r, Period::Week)?,
            I::GetAssetValueMonth => period(r, Period::Month)?,
            I::GetAssetValueYear => period(r, Period::Year)?,
            I::GetAssetValueAllTime => Self::GetAssetValueAllTime { symbol: symbol(r)? },
            I::GetUserInfo => Self::GetUserInfo { session: session(r)?, username: username(r)? },
            I::GetUserPortfolio => {
                Self::GetUserPortfolio { session: session(r)?, username: username(r)? }
            }
            I::GetUserTransactionHistory => {
                Self::GetUserTransactionHistory { session: session(r)?, username: username(r)? }
            }
            other => {
                return Err(DecodeError::UnexpectedInstruction {
                    instruction: other,
                    expected: "request",
                });
            }
        })
    }
}
