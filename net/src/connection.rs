//! The client–worker connection state machine (spec 4.2), sans IO: no sockets, no clock.
//!
//! A [`Connection`] starts in command state with no session. For each decoded request the
//! server calls [`Connection::handle`], which answers [`Verdict::Proceed`] (do the work, e.g.
//! relay to the master) or [`Verdict::Reply`] with the return to send at once: the matching
//! `...Fail` with a [`Reason`] when the request is not allowed now, or the `switchState` result.
//! A request is never silently dropped. When the server sends the answer to a request it let
//! proceed, it calls [`Connection::on_response`] so that a `sessionID` return logs the connection
//! in and `logoutSuccess` logs it out.
//!
//! Rules (see `docs/PROTOCOL.md`, "Connection states"):
//! - command state takes `login`, `loginSession`, `register`, `purchaseAsset`, `sellAsset`,
//!   `logout` and `switchState`; data transfer state takes the `get...` instructions and
//!   `switchState`; `getWorkers` is taken in both. Anything else: its fail return, `wrong_state`.
//! - an instruction that carries a session id (other than `loginSession`) needs the connection
//!   to be logged in (`not_logged_in`) with that same session (`bad_session`).
//! - `switchState(session, s)` moves to `s` and answers `stateSwitchSuccess(s)`; asking for the
//!   current state answers `stateSwitchFail` with `wrong_state`. Data transfer state lasts until
//!   the client switches back to command state: several `get...` may be made in one visit.
//!   Only the end of the session (a logout, or the session ended elsewhere) moves the connection
//!   back to command state on its own.
//! - requests of one connection are handled one at a time, in order: `handle`, do the work,
//!   `on_response`, send, then the next request.

use crate::instruction::Instruction;
use crate::request::Request;
use crate::response::Response;
use crate::types::{ConnState, Failure, Reason, SessionId};

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The request is allowed now: handle it, then report the answer with
    /// [`Connection::on_response`].
    Proceed,
    /// Send this return at once; the request goes no further.
    Reply(Response),
}

/// One client connection's protocol state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    state: ConnState,
    session: Option<SessionId>,
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    /// A new connection: command state, not logged in.
    pub fn new() -> Self {
        Self { state: ConnState::Command, session: None }
    }

    /// The current state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The session this connection is logged in with, if any.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// Decides what to do with `request` in the current state; performs `switchState`.
    pub fn handle(&mut self, request: &Request) -> Verdict {
        let instruction = request.instruction();
        let allowed = match instruction {
            Instruction::GetWorkers | Instruction::SwitchState => true,
            _ => match self.state {
                ConnState::Command => instruction.message_type() == crate::MessageType::Command,
                ConnState::DataTransfer => {
                    instruction.message_type() == crate::MessageType::DataTransfer
                }
            },
        };
        if !allowed {
            let needed = match self.state {
                ConnState::Command => ConnState::DataTransfer,
                ConnState::DataTransfer => ConnState::Command,
            };
            return Verdict::Reply(request.fail(Failure::new(
                Reason::WrongState,
                format!(
                    "{instruction} is not allowed in {} state; switch to {needed} state first",
                    self.state
                ),
            )));
        }
        if let Some(session) = request.session()
            && !matches!(request, Request::LoginSession { .. })
        {
            match self.session {
                None => {
                    return Verdict::Reply(request.fail(Failure::new(
                        Reason::NotLoggedIn,
                        format!("{instruction} needs a logged-in connection"),
                    )));
                }
                Some(own) if own != session => {
                    return Verdict::Reply(request.fail(Failure::new(
                        Reason::BadSession,
                        "the session id is not this connection's session",
                    )));
                }
                Some(_) => {}
            }
        }
        if let Request::SwitchState { state, .. } = request {
            if *state == self.state {
                return Verdict::Reply(Response::StateSwitchFail(Failure::new(
                    Reason::WrongState,
                    format!("already in {state} state"),
                )));
            }
            self.state = *state;
            return Verdict::Reply(Response::StateSwitchSuccess(*state));
        }
        Verdict::Proceed
    }

    /// Records the answer sent to a request that proceeded: `sessionID` logs the connection in
    /// with that session; `logoutSuccess` logs it out. Other answers change nothing.
    pub fn on_response(&mut self, response: &Response) {
        match response {
            Response::SessionId(session) => self.session = Some(*session),
            Response::LogoutSuccess => self.end_session(),
            _ => {}
        }
    }

    /// Logs the connection out (a logout, or its session ended elsewhere: logged out on
    /// another connection, expired) and puts it back in command state, where a connection
    /// that is not logged in starts. Leaving the connection in data transfer state would strand
    /// it: `switchState` needs a session, and `login` is refused there.
    pub fn end_session(&mut self) {
        self.session = None;
        self.state = ConnState::Command;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use engine::{Qty, Symbol, Timestamp, Username};

    use super::*;
    use crate::types::{HashedPassword, Period};

    const S: SessionId = SessionId([1; 32]);
    const OTHER: SessionId = SessionId([2; 32]);

    fn sym() -> Symbol {
        Symbol::new("AAPL").unwrap()
    }

    fn user() -> Username {
        Username::new("alice").unwrap()
    }

    fn fail_reason(verdict: Verdict) -> (crate::Instruction, Reason) {
        match verdict {
            Verdict::Reply(response) => {
                let reason = response.failure().expect("a failure").reason;
                (response.instruction(), reason)
            }
            Verdict::Proceed => panic!("expected a reply"),
        }
    }

    fn logged_in() -> Connection {
        let mut conn = Connection::new();
        assert_eq!(conn.handle(&Request::LoginSession { session: S }), Verdict::Proceed);
        conn.on_response(&Response::SessionId(S));
        conn
    }

    #[test]
    fn starts_in_command_state_logged_out() {
        let conn = Connection::new();
        assert_eq!(conn.state(), ConnState::Command);
        assert_eq!(conn.session(), None);
    }

    #[test]
    fn command_instructions_proceed_in_command_state() {
        let mut conn = logged_in();
        let password = HashedPassword::new(vec![0; 32]).unwrap();
        for request in [
            Request::Login { username: user(), password: password.clone(), expirable: true },
            Request::Purchase {
                session: S,
                symbol: sym(),
                qty: Qty::from_raw(1),
                client_order_id: 1,
            },
            Request::Sell { session: S, symbol: sym(), qty: Qty::from_raw(1), client_order_id: 1 },
            Request::GetWorkers,
            Request::Logout { session: S },
        ] {
            assert_eq!(conn.handle(&request), Verdict::Proceed, "{request:?}");
        }
    }

    #[test]
    fn data_instructions_need_data_transfer_state() {
        let mut conn = logged_in();
        let get =
            Request::GetAssetValue { symbol: sym(), period: Period::Week, date: Timestamp(0) };
        assert_eq!(fail_reason(conn.handle(&get)), (Instruction::DataFail, Reason::WrongState));
        assert_eq!(
            conn.handle(&Request::SwitchState { session: S, state: ConnState::DataTransfer }),
            Verdict::Reply(Response::StateSwitchSuccess(ConnState::DataTransfer))
        );
        assert_eq!(conn.state(), ConnState::DataTransfer);
        assert_eq!(conn.handle(&get), Verdict::Proceed);
        assert_eq!(conn.handle(&Request::GetAssetInfo { symbol: sym() }), Verdict::Proceed);
        assert_eq!(conn.handle(&Request::GetWorkers), Verdict::Proceed);
        // Command instructions are refused with their own fail return.
        let buy = Request::Purchase {
            session: S,
            symbol: sym(),
            qty: Qty::from_raw(1),
            client_order_id: 1,
        };
        assert_eq!(fail_reason(conn.handle(&buy)), (Instruction::PurchaseFail, Reason::WrongState));
        assert_eq!(
            fail_reason(conn.handle(&Request::Logout { session: S })),
            (Instruction::LogoutFail, Reason::WrongState)
        );
        assert_eq!(
            fail_reason(conn.handle(&Request::LoginSession { session: S })),
            (Instruction::LoginFail, Reason::WrongState)
        );
        // Switching to the current state fails; switching back succeeds.
        assert_eq!(
            fail_reason(
                conn.handle(&Request::SwitchState { session: S, state: ConnState::DataTransfer })
            ),
            (Instruction::StateSwitchFail, Reason::WrongState)
        );
        assert_eq!(
            conn.handle(&Request::SwitchState { session: S, state: ConnState::Command }),
            Verdict::Reply(Response::StateSwitchSuccess(ConnState::Command))
        );
        assert_eq!(conn.handle(&buy), Verdict::Proceed);
    }

    #[test]
    fn session_instructions_need_this_connections_session() {
        let mut conn = Connection::new();
        let buy = |session| Request::Purchase {
            session,
            symbol: sym(),
            qty: Qty::from_raw(1),
            client_order_id: 1,
        };
        assert_eq!(
            fail_reason(conn.handle(&buy(S))),
            (Instruction::PurchaseFail, Reason::NotLoggedIn)
        );
        assert_eq!(
            fail_reason(
                conn.handle(&Request::SwitchState { session: S, state: ConnState::DataTransfer })
            ),
            (Instruction::StateSwitchFail, Reason::NotLoggedIn)
        );
        assert_eq!(conn.state(), ConnState::Command);
        let mut conn = logged_in();
        assert_eq!(
            fail_reason(conn.handle(&buy(OTHER))),
            (Instruction::PurchaseFail, Reason::BadSession)
        );
        conn.handle(&Request::SwitchState { session: S, state: ConnState::DataTransfer });
        assert_eq!(
            fail_reason(
                conn.handle(&Request::GetUserPortfolio { session: OTHER, username: user() })
            ),
            (Instruction::DataFail, Reason::BadSession)
        );
    }

    #[test]
    fn logout_logs_the_connection_out() {
        let mut conn = logged_in();
        assert_eq!(conn.session(), Some(S));
        assert_eq!(conn.handle(&Request::Logout { session: S }), Verdict::Proceed);
        conn.on_response(&Response::LogoutSuccess);
        assert_eq!(conn.session(), None);
        let sell =
            Request::Sell { session: S, symbol: sym(), qty: Qty::from_raw(1), client_order_id: 1 };
        assert_eq!(fail_reason(conn.handle(&sell)), (Instruction::SellFail, Reason::NotLoggedIn));
    }

    #[test]
    fn a_session_ending_in_data_transfer_state_leaves_the_connection_in_command_state() {
        let mut conn = logged_in();
        let to_data = Request::SwitchState { session: S, state: ConnState::DataTransfer };
        assert_eq!(
            conn.handle(&to_data),
            Verdict::Reply(Response::StateSwitchSuccess(ConnState::DataTransfer))
        );
        // The session ends elsewhere while the connection is in data transfer state.
        conn.end_session();
        assert_eq!((conn.state(), conn.session()), (ConnState::Command, None));
        // So it can log in again, which it could not from data transfer state.
        let password = HashedPassword::new(vec![0; 32]).unwrap();
        let login = Request::Login { username: user(), password, expirable: false };
        assert_eq!(conn.handle(&login), Verdict::Proceed);
        assert_eq!(conn.handle(&Request::LoginSession { session: OTHER }), Verdict::Proceed);
        conn.on_response(&Response::SessionId(OTHER));
        let to_data = Request::SwitchState { session: OTHER, state: ConnState::DataTransfer };
        assert_eq!(
            conn.handle(&to_data),
            Verdict::Reply(Response::StateSwitchSuccess(ConnState::DataTransfer))
        );
        // A logout answer does the same.
        conn.on_response(&Response::LogoutSuccess);
        assert_eq!((conn.state(), conn.session()), (ConnState::Command, None));
    }
}
