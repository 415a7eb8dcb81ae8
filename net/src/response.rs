//! Responses: the server returns (spec 4.5.3) plus `logoutSuccess`, `logoutFail` and `error`.

use engine::limits::SYMBOL_CHARS_MAX;
use engine::{Cash, IntervalId, OrderId, Price, Qty, Side, Symbol, Timestamp};

use crate::args::{ArgReader, ArgWriter};
use crate::error::{DecodeError, EncodeError};
use crate::frame::MessageType;
use crate::instruction::Instruction;
use crate::limits::FAILURE_MESSAGE_BYTES_MAX;
use crate::message::Message;
use crate::payload::DataPayload;
use crate::types::{ConnState, Failure, FillReport, Reason, SessionId, side_code, side_from_code};

/// A server return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `loginFail`.
    LoginFail(Failure),
    /// `sessionID`: the login succeeded; this is the session.
    SessionId(SessionId),
    /// `registerSuccess`.
    RegisterSuccess,
    /// `registerFail`.
    RegisterFail(Failure),
    /// `purchaseSuccess`, with the fill.
    PurchaseSuccess(FillReport),
    /// `purchaseFail`.
    PurchaseFail(Failure),
    /// `sellSuccess`, with the fill.
    SellSuccess(FillReport),
    /// `sellFail`.
    SellFail(Failure),
    /// `stateSwitchSuccess`, with the state now in force.
    StateSwitchSuccess(ConnState),
    /// `stateSwitchFail`.
    StateSwitchFail(Failure),
    /// `data`: a payload, sent in numbered packets.
    Data(DataPayload),
    /// `dataFail`.
    DataFail(Failure),
    /// `logoutSuccess`.
    LogoutSuccess,
    /// `logoutFail`.
    LogoutFail(Failure),
    /// `error`: the request could not be handled at all (unknown instruction, malformed).
    Error(Failure),
}

impl Response {
    /// The instruction.
    pub fn instruction(&self) -> Instruction {
        use Instruction as I;
        match self {
            Self::LoginFail(_) => I::LoginFail,
            Self::SessionId(_) => I::SessionId,
            Self::RegisterSuccess => I::RegisterSuccess,
            Self::RegisterFail(_) => I::RegisterFail,
            Self::PurchaseSuccess(_) => I::PurchaseSuccess,
            Self::PurchaseFail(_) => I::PurchaseFail,
            Self::SellSuccess(_) => I::SellSuccess,
            Self::SellFail(_) => I::SellFail,
            Self::StateSwitchSuccess(_) => I::StateSwitchSuccess,
            Self::StateSwitchFail(_) => I::StateSwitchFail,
            Self::Data(_) => I::Data,
            Self::DataFail(_) => I::DataFail,
            Self::LogoutSuccess => I::LogoutSuccess,
            Self::LogoutFail(_) => I::LogoutFail,
            Self::Error(_) => I::Error,
        }
    }

    /// The failure, if this is a `...Fail` or `error` return.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::LoginFail(f)
            | Self::RegisterFail(f)
            | Self::PurchaseFail(f)
            | Self::SellFail(f)
            | Self::StateSwitchFail(f)
            | Self::DataFail(f)
            | Self::LogoutFail(f)
            | Self::Error(f) => Some(f),
            _ => None,
        }
    }

    /// The success return of a fill: `purchaseSuccess` for a buy, `sellSuccess` for a sell.
    pub fn filled(report: FillReport) -> Response {
        match report.side {
            Side::Buy => Self::PurchaseSuccess(report),
            Side::Sell => Self::SellSuccess(report),
        }
    }

    /// The failure return of the same request as this return: `dataFail` for `data`,
    /// `purchaseFail` for `purchaseSuccess`, and so on (`error` stays `error`). A server whose
    /// answer cannot be sent (too large for one message) sends this instead, so the client still
    /// gets an answer of the kind it waits for.
    pub fn failed_as(&self, failure: Failure) -> Response {
        match self {
            Self::LoginFail(_) | Self::SessionId(_) => Self::LoginFail(failure),
            Self::RegisterSuccess | Self::RegisterFail(_) => Self::RegisterFail(failure),
            Self::PurchaseSuccess(_) | Self::PurchaseFail(_) => Self::PurchaseFail(failure),
            Self::SellSuccess(_) | Self::SellFail(_) => Self::SellFail(failure),
            Self::StateSwitchSuccess(_) | Self::StateSwitchFail(_) => {
                Self::StateSwitchFail(failure)
            }
            Self::Data(_) | Self::DataFail(_) => Self::DataFail(failure),
            Self::LogoutSuccess | Self::LogoutFail(_) => Self::LogoutFail(failure),
            Self::Error(_) => Self::Error(failure),
        }
    }

    /// The failure return matching a request instruction number: `loginFail` for either login,
    /// `registerFail`, `purchaseFail`, `sellFail`, `stateSwitchFail`, `logoutFail`, `dataFail`
    /// for `getWorkers` and every `get...`; `error` for anything else (unknown numbers, returns,
    /// control messages). Use it to answer a message that could not be decoded.
    pub fn failure_for(instruction: u16, failure: Failure) -> Response {
        use Instruction as I;
        match Instruction::from_code(instruction) {
            Some(I::Login | I::LoginSession) => Self::LoginFail(failure),
            Some(I::Register) => Self::RegisterFail(failure),
            Some(I::PurchaseAsset) => Self::PurchaseFail(failure),
            Some(I::SellAsset) => Self::SellFail(failure),
            Some(I::SwitchState) => Self::StateSwitchFail(failure),
            Some(I::Logout) => Self::LogoutFail(failure),
            Some(instruction)
                if instruction == I::GetWorkers
                    || instruction.message_type() == MessageType::DataTransfer =>
            {
                Self::DataFail(failure)
            }
            _ => Self::Error(failure),
        }
    }

    /// The answer to a message whose frames were fine but which did not decode: the matching
    /// failure return (see [`Response::failure_for`]) with [`DecodeError::reason`] and the error
    /// text.
    pub fn for_decode_error(message: &Message, error: &DecodeError) -> Response {
        let failure = Failure::new(error.reason(), error.to_string());
        match error {
            DecodeError::UnknownInstruction { .. } | DecodeError::TypeMismatch { .. } => {
                Self::Error(failure)
            }
            _ => Self::failure_for(message.instruction, failure),
        }
    }

    /// Encodes the response as a message (split into packets by
    /// [`Message::to_frames`](crate::Message::to_frames)).
    pub fn encode(&self) -> Result<Message, EncodeError> {
        let mut w = ArgWriter::new();
        self.write(&mut w);
        let instruction = self.instruction();
        w.finish(instruction.message_type(), instruction.code())
    }

    pub(crate) fn write(&self, w: &mut ArgWriter) {
        match self {
            Self::LoginFail(f)
            | Self::RegisterFail(f)
            | Self::PurchaseFail(f)
            | Self::SellFail(f)
            | Self::StateSwitchFail(f)
            | Self::DataFail(f)
            | Self::LogoutFail(f)
            | Self::Error(f) => write_failure(w, f),
            Self::SessionId(session) => w.id32(&session.0),
            Self::RegisterSuccess | Self::LogoutSuccess => {}
            Self::PurchaseSuccess(fill) | Self::SellSuccess(fill) => {
                let side =
                    if matches!(self, Self::PurchaseSuccess(_)) { Side::Buy } else { Side::Sell };
                if fill.side != side {
                    w.fail(EncodeError::Inconsistent { what: "side" });
                }
                w.u64(fill.order.0);
                w.text("symbol", fill.symbol.as_str(), SYMBOL_CHARS_MAX);
                w.u16(side_code(fill.side));
                w.u64(fill.qty.raw());
                w.u64(fill.price.raw());
                w.u64(fill.amount.raw());
                w.u64(fill.interval.0);
                w.i64(fill.settled_at.micros());
                w.u64(fill.cash_after.raw());
            }
            Self::StateSwitchSuccess(state) => w.u16(state.code()),
            Self::Data(payload) => payload.write(w),
        }
    }

    /// Decodes a response (a whole, reassembled message).
    pub fn decode(message: &Message) -> Result<Self, DecodeError> {
        let mut r = ArgReader::new(&message.body);
        let response =
            Self::read(message.message_type, message.instruction, message.arg_count, &mut r)?;
        r.finish()?;
        Ok(response)
    }

    pub(crate) fn read(
        message_type: MessageType,
        code: u16,
        arg_count: u16,
        r: &mut ArgReader<'_>,
    ) -> Result<Self, DecodeError> {
        use Instruction as I;
        let is_response = |i: Instruction| i.message_type() == MessageType::ServerReturn;
        let instruction =
            Instruction::check_header(message_type, code, arg_count, is_response, "response")?;
        Ok(match instruction {
            I::LoginFail => Self::LoginFail(read_failure(r)?),
            I::SessionId => Self::SessionId(SessionId(r.id32("sessionID")?)),
            I::RegisterSuccess => Self::RegisterSuccess,
            I::RegisterFail => Self::RegisterFail(read_failure(r)?),
            I::PurchaseSuccess => Self::PurchaseSuccess(read_fill(r, Side::Buy)?),
            I::PurchaseFail => Self::PurchaseFail(read_failure(r)?),
            I::SellSuccess => Self::SellSuccess(read_fill(r, Side::Sell)?),
            I::SellFail => Self::SellFail(read_failure(r)?),
            I::StateSwitchSuccess => {
                Self::StateSwitchSuccess(r.code("state", ConnState::from_code)?)
            }
            I::StateSwitchFail => Self::StateSwitchFail(read_failure(r)?),
            I::Data => Self::Data(DataPayload::read(arg_count, r)?),
            I::DataFail => Self::DataFail(read_failure(r)?),
            I::LogoutSuccess => Self::LogoutSuccess,
            I::LogoutFail => Self::LogoutFail(read_failure(r)?),
            I::Error => Self::Error(read_failure(r)?),
            other => {
                return Err(DecodeError::UnexpectedInstruction {
                    instruction: other,
                    expected: "response",
                });
            }
        })
    }
}

pub(crate) fn write_failure(w: &mut ArgWriter, failure: &Failure) {
    w.u16(failure.reason.code());
    w.text("message", &failure.message, FAILURE_MESSAGE_BYTES_MAX);
}

pub(crate) fn read_failure(r: &mut ArgReader<'_>) -> Result<Failure, DecodeError> {
    let reason = Reason::from_code(r.u16("reason")?);
    let message = r.text("message", FAILURE_MESSAGE_BYTES_MAX)?.to_owned();
    Ok(Failure { reason, message })
}

/// A fill report; its side must be the one its instruction implies.
fn read_fill(r: &mut ArgReader<'_>, side: Side) -> Result<FillReport, DecodeError> {
    let order = OrderId(r.u64("orderId")?);
    let symbol = r.name("symbol", SYMBOL_CHARS_MAX, Symbol::new)?;
    let field = r.next_field();
    let got = r.code("side", side_from_code)?;
    if got != side {
        return Err(DecodeError::Inconsistent { field, what: "side" });
    }
    Ok(FillReport {
        order,
        symbol,
        side,
        qty: Qty::from_raw(r.u64("quantity")?),
        price: Price::from_raw(r.u64("price")?),
        amount: Cash::from_raw(r.u64("amount")?),
        interval: IntervalId(r.u64("interval")?),
        settled_at: Timestamp(r.i64("settledAt")?),
        cash_after: Cash::from_raw(r.u64("cashAfter")?),
    })
}
