//! The instruction table: every instruction's stable number. Numbers never change once released;
//! new instructions get new numbers. The high byte of a number is its message type's code.

use std::fmt;

use crate::error::DecodeError;
use crate::frame::MessageType;

macro_rules! instructions {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $code:literal, $name:literal, args: $args:literal, returns: $returns:literal;
    )*) => {
        /// An instruction (spec 4.5), with its stable wire number as discriminant.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Instruction {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl Instruction {
            /// Every instruction, in number order.
            pub const ALL: &'static [Instruction] = &[$(Self::$variant,)*];

            /// The spec's name (`purchaseAsset`, `stateSwitchFail`...), or ours for additions.
            pub const fn name(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// The arguments, in order, as documented in `docs/PROTOCOL.md`.
            pub const fn args_doc(self) -> &'static str {
                match self { $(Self::$variant => $args,)* }
            }

            /// What answers it (for requests), as documented in `docs/PROTOCOL.md`.
            pub const fn returns_doc(self) -> &'static str {
                match self { $(Self::$variant => $returns,)* }
            }
        }
    };
}

instructions! {
    /// `login(username, hashedPass, isExpirable)` (spec 4.6.1).
    Login = 0x0101, "login",
        args: "username: text (1..=24), hashedPass: bytes (16..=128), isExpirable: bool",
        returns: "sessionID | loginFail";
    /// `login(sessionID)` (spec 4.6.2).
    LoginSession = 0x0102, "loginSession",
        args: "sessionID: id32", returns: "sessionID | loginFail";
    /// `register(username, email, hashedPass)` (spec 4.6.3).
    Register = 0x0103, "register",
        args: "username: text (1..=24), email: text (..=321), hashedPass: bytes (16..=128)",
        returns: "registerSuccess | registerFail";
    /// `purchaseAsset(sessionID, name, quantity)` (spec 4.6.4).
    PurchaseAsset = 0x0104, "purchaseAsset",
        args: "sessionID: id32, symbol: text (1..=16), quantity: u64 (10^-8 units), clientOrderId: u64",
        returns: "purchaseSuccess | purchaseFail";
    /// `sellAsset(sessionID, name, quantity)` (spec 4.6.5).
    SellAsset = 0x0105, "sellAsset",
        args: "sessionID: id32, symbol: text (1..=16), quantity: u64 (10^-8 units), clientOrderId: u64",
        returns: "sellSuccess | sellFail";
    /// `switchState(sessionID, state)` (spec 4.6.6); valid in both states.
    SwitchState = 0x0106, "switchState",
        args: "sessionID: id32, state: u16 (1 command, 2 data transfer)",
        returns: "stateSwitchSuccess | stateSwitchFail";
    /// `logout(sessionID)`: ends the session everywhere (our addition).
    Logout = 0x0107, "logout",
        args: "sessionID: id32", returns: "logoutSuccess | logoutFail";
    /// `getWorkers()`: the client asks the master for the worker list (spec 3.1.5; our addition).
    GetWorkers = 0x0108, "getWorkers",
        args: "(none)", returns: "data (workerList) | dataFail";
    /// `getAssetInfo(asset)` (spec 4.6.7).
    GetAssetInfo = 0x0201, "getAssetInfo",
        args: "symbol: text (1..=16)", returns: "data (assetInfo) | dataFail";
    /// `getAssetValueCurrent(asset)` (spec 4.6.8).
    GetAssetValueCurrent = 0x0202, "getAssetValueCurrent",
        args: "symbol: text (1..=16)", returns: "data (assetInfo) | dataFail";
    /// `getAssetValueDay(asset, date)` (spec 4.6.9).
    GetAssetValueDay = 0x0203, "getAssetValueDay",
        args: "symbol: text (1..=16), date: i64 (µs since epoch, UTC)",
        returns: "data (priceSeries) | dataFail";
    /// `getAssetValueWeek(asset, date)` (spec 4.6.10).
    GetAssetValueWeek = 0x0204, "getAssetValueWeek",
        args: "symbol: text (1..=16), date: i64 (µs since epoch, UTC)",
        returns: "data (priceSeries) | dataFail";
    /// `getAssetValueMonth(asset, date)` (spec 4.6.11).
    GetAssetValueMonth = 0x0205, "getAssetValueMonth",
        args: "symbol: text (1..=16), date: i64 (µs since epoch, UTC)",
        returns: "data (priceSeries) | dataFail";
    /// `getAssetValueYear(asset, date)` (spec 4.6.12).
    GetAssetValueYear = 0x0206, "getAssetValueYear",
        args: "symbol: text (1..=16), date: i64 (µs since epoch, UTC)",
        returns: "data (priceSeries) | dataFail";
    /// `getAssetValueAllTime(asset)` (spec 4.6.13).
    GetAssetValueAllTime = 0x0207, "getAssetValueAllTime",
        args: "symbol: text (1..=16)", returns: "data (priceSeries) | dataFail";
    /// `getUserInfo(sessionID, username)` (spec 4.6.14).
    GetUserInfo = 0x0208, "getUserInfo",
        args: "sessionID: id32, username: text (1..=24)", returns: "data (userInfo) | dataFail";
    /// `getUserPortfolio(sessionID, username)` (spec 4.6.15).
    GetUserPortfolio = 0x0209, "getUserPortfolio",
        args: "sessionID: id32, username: text (1..=24)", returns: "data (portfolio) | dataFail";
    /// `getUserTransactionHistory(sessionID, username)` (spec 4.6.16).
    GetUserTransactionHistory = 0x020A, "getUserTransactionHistory",
        args: "sessionID: id32, username: text (1..=24)",
        returns: "data (transactionHistory) | dataFail";
    /// `loginFail` (spec 4.6.17).
    LoginFail = 0x0301, "loginFail", args: "reason: u16, message: text (..=1024)", returns: "";
    /// `sessionID` (spec 4.6.18).
    SessionId = 0x0302, "sessionID", args: "sessionID: id32", returns: "";
    /// `registerSuccess` (spec 4.6.19).
    RegisterSuccess = 0x0303, "registerSuccess", args: "(none)", returns: "";
    /// `registerFail` (spec 4.6.20).
    RegisterFail = 0x0304, "registerFail", args: "reason: u16, message: text (..=1024)",
        returns: "";
    /// `purchaseSuccess` (spec 4.6.21), with the fill.
    PurchaseSuccess = 0x0305, "purchaseSuccess",
        args: "orderId: u64, symbol: text, side: u16, quantity: u64, price: u64, amount: u64, \
               interval: u64, settledAt: i64, cashAfter: u64",
        returns: "";
    /// `purchaseFail` (spec 4.6.22).
    PurchaseFail = 0x0306, "purchaseFail", args: "reason: u16, message: text (..=1024)",
        returns: "";
    /// `sellSuccess` (spec 4.6.23), with the fill.
    SellSuccess = 0x0307, "sellSuccess",
        args: "orderId: u64, symbol: text, side: u16, quantity: u64, price: u64, amount: u64, \
               interval: u64, settledAt: i64, cashAfter: u64",
        returns: "";
    /// `sellFail` (spec 4.6.24).
    SellFail = 0x0308, "sellFail", args: "reason: u16, message: text (..=1024)", returns: "";
    /// `stateSwitchSuccess` (spec 4.6.25), with the state now in force.
    StateSwitchSuccess = 0x0309, "stateSwitchSuccess", args: "state: u16", returns: "";
    /// `stateSwitchFail` (spec 4.6.26).
    StateSwitchFail = 0x030A, "stateSwitchFail", args: "reason: u16, message: text (..=1024)",
        returns: "";
    /// `data` (spec 4.6.27): a typed payload, in numbered packets (spec 4.7.1).
    Data = 0x030B, "data", args: "kind: u16, then the kind's fields (see Data payloads)",
        returns: "";
    /// `dataFail` (spec 4.6.28).
    DataFail = 0x030C, "dataFail", args: "reason: u16, message: text (..=1024)", returns: "";
    /// `logoutSuccess` (our addition).
    LogoutSuccess = 0x030D, "logoutSuccess", args: "(none)", returns: "";
    /// `logoutFail` (our addition).
    LogoutFail = 0x030E, "logoutFail", args: "reason: u16, message: text (..=1024)", returns: "";
    /// `error`: a frame that could not be handled at all (our addition).
    Error = 0x030F, "error", args: "reason: u16, message: text (..=1024)", returns: "";
    /// `workerHello`: a worker opens the link (our addition).
    WorkerHello = 0x0401, "workerHello",
        args: "workerId: id16 (UUID), version: u16, clientAddress: text (1..=255, host:port), \
               nonce: id32",
        returns: "challenge | linkRefused";
    /// `challenge`: the master's nonce for the worker to sign, the master's signature over the
    /// worker's nonce and the sealed link key, and that sealed key (see `docs/WORKER_AUTH.md`).
    Challenge = 0x0402, "challenge",
        args: "nonce: id32, masterProof: bytes (1..=4096), sealedKey: bytes (1..=4096)",
        returns: "helloProof";
    /// `helloProof`: the worker's detached OpenPGP signature (see `docs/WORKER_AUTH.md`).
    HelloProof = 0x0403, "helloProof", args: "signature: bytes (1..=4096)",
        returns: "linkAccepted | linkRefused";
    /// `linkAccepted`: the worker's proof is accepted; the link is sealed from the next frame on
    /// with the key of the `challenge`.
    LinkAccepted = 0x0404, "linkAccepted", args: "(none)", returns: "";
    /// `linkRefused`: the master refuses the worker.
    LinkRefused = 0x0405, "linkRefused", args: "reason: u16, message: text (..=1024)",
        returns: "";
    /// `heartbeat`: the worker's periodic liveness message.
    Heartbeat = 0x0406, "heartbeat", args: "seq: u64", returns: "heartbeatAck";
    /// `heartbeatAck`: the master's answer to a heartbeat.
    HeartbeatAck = 0x0407, "heartbeatAck", args: "seq: u64", returns: "";
    /// `relay`: a client's request forwarded by a worker, with the client's data attached.
    Relay = 0x0408, "relay",
        args: "relayId: u64, clientIp: ip, receivedAt: i64, sessionID: id32 | none, \
               request: message",
        returns: "relayReply";
    /// `relayReply`: the master's answer to one relay.
    RelayReply = 0x0409, "relayReply", args: "relayId: u64, response: message", returns: "";
}

impl Instruction {
    /// The stable wire number.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The instruction of a wire number, if it is one.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.binary_search_by_key(&code, |i| i.code()).ok().map(|at| Self::ALL[at])
    }

    /// The message type every frame of this instruction carries: the number's high byte.
    pub const fn message_type(self) -> MessageType {
        match self.code() >> 8 {
            1 => MessageType::Command,
            2 => MessageType::DataTransfer,
            3 => MessageType::ServerReturn,
            _ => MessageType::Control,
        }
    }
}

impl Instruction {
    /// The number of top-level arguments it always has; `None` for `data`, whose count depends
    /// on the payload kind.
    pub const fn arg_count(self) -> Option<u16> {
        use Instruction as I;
        Some(match self {
            I::GetWorkers | I::RegisterSuccess | I::LogoutSuccess | I::LinkAccepted => 0,
            I::LoginSession
            | I::Logout
            | I::GetAssetInfo
            | I::GetAssetValueCurrent
            | I::GetAssetValueAllTime
            | I::SessionId
            | I::StateSwitchSuccess
            | I::HelloProof
            | I::Heartbeat
            | I::HeartbeatAck => 1,
            I::SwitchState
            | I::GetAssetValueDay
            | I::GetAssetValueWeek
            | I::GetAssetValueMonth
            | I::GetAssetValueYear
            | I::GetUserInfo
            | I::GetUserPortfolio
            | I::GetUserTransactionHistory
            | I::LoginFail
            | I::RegisterFail
            | I::PurchaseFail
            | I::SellFail
            | I::StateSwitchFail
            | I::DataFail
            | I::LogoutFail
            | I::Error
            | I::LinkRefused
            | I::RelayReply => 2,
            I::Login | I::Register | I::Challenge => 3,
            I::PurchaseAsset | I::SellAsset => 4,
            I::WorkerHello => 4,
            I::Relay => 5,
            I::PurchaseSuccess | I::SellSuccess => 9,
            I::Data => return None,
        })
    }

    /// True for instructions a client sends (command and data-transfer types).
    pub const fn is_request(self) -> bool {
        matches!(self.message_type(), MessageType::Command | MessageType::DataTransfer)
    }

    /// Checks a header (or a nested message header) against the table: the instruction exists,
    /// the message type is its own, `accept` takes it, and the argument count is its count.
    pub(crate) fn check_header(
        message_type: MessageType,
        code: u16,
        arg_count: u16,
        accept: fn(Instruction) -> bool,
        expected: &'static str,
    ) -> Result<Instruction, DecodeError> {
        let instruction =
            Instruction::from_code(code).ok_or(DecodeError::UnknownInstruction { code })?;
        if instruction.message_type() != message_type {
            return Err(DecodeError::TypeMismatch {
                instruction,
                expected: instruction.message_type(),
                got: message_type,
            });
        }
        if !accept(instruction) {
            return Err(DecodeError::UnexpectedInstruction { instruction, expected });
        }
        if let Some(count) = instruction.arg_count()
            && count != arg_count
        {
            return Err(DecodeError::WrongArgCount {
                instruction,
                expected: count,
                got: arg_count,
            });
        }
        Ok(instruction)
    }
}

impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_typed_by_high_byte() {
        assert!(Instruction::ALL.windows(2).all(|w| w[0].code() < w[1].code()));
        for &i in Instruction::ALL {
            assert_eq!(Instruction::from_code(i.code()), Some(i));
            assert_eq!(u16::from(i.message_type().code()), i.code() >> 8);
        }
        assert_eq!(Instruction::from_code(0), None);
        assert_eq!(Instruction::from_code(0x0110), None);
    }

    #[test]
    fn released_numbers_never_change() {
        // A change here breaks every deployed client: add instructions, never renumber.
        let expected: &[(u16, &str)] = &[
            (0x0101, "login"),
            (0x0102, "loginSession"),
            (0x0103, "register"),
            (0x0104, "purchaseAsset"),
            (0x0105, "sellAsset"),
            (0x0106, "switchState"),
            (0x0107, "logout"),
            (0x0108, "getWorkers"),
            (0x0201, "getAssetInfo"),
            (0x0202, "getAssetValueCurrent"),
            (0x0203, "getAssetValueDay"),
            (0x0204, "getAssetValueWeek"),
            (0x0205, "getAssetValueMonth"),
            (0x0206, "getAssetValueYear"),
            (0x0207, "getAssetValueAllTime"),
            (0x0208, "getUserInfo"),
            (0x0209, "getUserPortfolio"),
            (0x020A, "getUserTransactionHistory"),
            (0x0301, "loginFail"),
            (0x0302, "sessionID"),
            (0x0303, "registerSuccess"),
            (0x0304, "registerFail"),
            (0x0305, "purchaseSuccess"),
            (0x0306, "purchaseFail"),
            (0x0307, "sellSuccess"),
            (0x0308, "sellFail"),
            (0x0309, "stateSwitchSuccess"),
            (0x030A, "stateSwitchFail"),
            (0x030B, "data"),
            (0x030C, "dataFail"),
            (0x030D, "logoutSuccess"),
            (0x030E, "logoutFail"),
            (0x030F, "error"),
            (0x0401, "workerHello"),
            (0x0402, "challenge"),
            (0x0403, "helloProof"),
            (0x0404, "linkAccepted"),
            (0x0405, "linkRefused"),
            (0x0406, "heartbeat"),
            (0x0407, "heartbeatAck"),
            (0x0408, "relay"),
            (0x0409, "relayReply"),
        ];
        let actual: Vec<(u16, &str)> =
            Instruction::ALL.iter().map(|i| (i.code(), i.name())).collect();
        assert_eq!(actual, expected);
    }
}
