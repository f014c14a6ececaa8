//! The will: a message the server publishes on a client's behalf when its
//! connection dies without a goodbye (protocol.md §10). A will is per connection,
//! and receivers drop a repeated id as a duplicate, so the client makes it afresh
//! for every connection: a fresh id, and with it whatever covers the id (a
//! signature, which `gale_security::presence` makes again each time).

use std::fmt;
use std::sync::Arc;

use gale_proto::{Message, MessageId};

/// Makes the will for one connection; called on every connect.
#[derive(Clone)]
pub struct Will(Arc<dyn Fn() -> Message + Send + Sync>);

impl Will {
    /// A will made by `make`, which must give a fresh id each time it is called.
    pub fn new(make: impl Fn() -> Message + Send + Sync + 'static) -> Will {
        Will(Arc::new(make))
    }

    /// `message` with a fresh id for every connection. Only for payloads that do
    /// not cover the id: a signed will must be made with [`Will::new`].
    pub fn with_fresh_ids(message: Message) -> Will {
        Will::new(move || Message {
            id: MessageId::generate(),
            ..message.clone()
        })
    }

    /// The will for a new connection.
    pub fn make(&self) -> Message {
        (self.0)()
    }
}

impl fmt::Debug for Will {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Will(..)")
    }
}
