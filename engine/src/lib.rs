//! PaperTrader's trading engine: a pure, deterministic state machine.
//!
//! Time, ids and prices come in as arguments; [`Event`]s come out; [`State`] is the fold of the
//! events. No IO, no clock, no randomness, no floats: the same input gives the same bytes on
//! every machine. See `docs/ENGINE.md` for the money rules and the canonical state encoding.

mod archive;
mod engine;
pub mod event;
pub mod ids;
pub mod limits;
pub mod money;
pub mod order;
pub mod recorded;
pub mod state;
pub mod tick;
pub mod workload;

pub use engine::{CommandError, Engine, OpenAccount};
pub use event::{
    AccountOpened, AssetListed, EVENT_FORMAT_VERSION, Event, Fill, IntervalSettled,
    PasswordRehashed,
};
pub use event::{RejectReason, Rejection};
pub use ids::{
    AccountId, ClientOrderId, Email, IntervalId, NameError, OrderId, PasswordHash, Symbol,
    Timestamp,
};
pub use ids::{Username, WorkerId};
pub use money::{Cash, ParseAmountError, Price, Qty, SCALE, Side};
pub use order::{Order, OrderKind, OrderQueue};
pub use state::Transaction;
pub use state::{Account, ApplyError, Digest, Holding, InvariantError, SettledInterval, State};
pub use tick::{Tick, TickError, TickSet};
