//! Orders and the queue that holds them until their interval settles.

use crate::ids::{AccountId, ClientOrderId, OrderId, Symbol, Timestamp, WorkerId};
use crate::money::{Qty, Side};

/// How an order is priced. Only market orders exist today; limit and stop orders will be new
/// variants appended after `Market`, so every event already in a journal keeps its meaning.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub enum OrderKind {
    /// Fill at the symbol's tick in the interval that settles the order, whatever it is.
    Market,
}

/// A buy or sell order as queued by the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct Order {
    /// Unique id, given by the master in arrival order; the last tie-breaker of the queue.
    pub id: OrderId,
    /// The id the client chose for the order, so that a retried order is recognised and not
    /// filled twice (the master keeps `(account, client_id)` unique). The engine only records it.
    pub client_id: ClientOrderId,
    /// Who trades.
    pub account: AccountId,
    /// What is traded.
    pub symbol: Symbol,
    /// Which way.
    pub side: Side,
    /// How much, in units of the asset.
    pub qty: Qty,
    /// How it is priced.
    pub kind: OrderKind,
    /// When the worker received it from the client (the worker's clock).
    pub placed_at: Timestamp,
    /// Which worker stamped it.
    pub worker: WorkerId,
}

impl Order {
    /// The settlement order key: worker timestamp, then worker id, then arrival (order id).
    pub const fn queue_key(&self) -> (Timestamp, WorkerId, OrderId) {
        (self.placed_at, self.worker, self.id)
    }
}

/// Orders waiting for the next settlement. Settlement takes them in [`Order::queue_key`] order,
/// whatever order they were pushed in.
#[derive(Debug, Clone, Default)]
pub struct OrderQueue {
    orders: Vec<Order>,
}

impl OrderQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an order.
    pub fn push(&mut self, order: Order) {
        self.orders.push(order);
    }

    /// Number of orders waiting.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// True when no order waits.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// Empties the queue, returning its orders in settlement order. Order ids are unique, so the
    /// key is a total order and an unstable sort gives the same result on every machine.
    pub fn drain_sorted(&mut self) -> Vec<Order> {
        self.sort_in_place();
        std::mem::take(&mut self.orders)
    }

    /// Sorts the waiting orders into settlement order where they are and returns them; they
    /// stay queued until [`OrderQueue::clear_kept`]. Settlement uses this and then empties the
    /// queue, so the queue keeps its memory for the next interval's orders.
    pub(crate) fn sort_in_place(&mut self) -> &[Order] {
        self.orders.sort_unstable_by_key(Order::queue_key);
        &self.orders
    }

    /// Empties the queue, keeping its memory.
    pub(crate) fn clear_kept(&mut self) {
        self.orders.clear();
    }
}
