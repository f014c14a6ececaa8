//! The tables of the store file, and the keys in them. One redb file,
//! `inboxes.redb`, in the data directory. Inboxes are numbered so message keys
//! stay short and sort by inbox, then by sequence number.

use redb::TableDefinition;

/// Inbox name → (inbox number, owner key id, locations separated by '\n').
pub const INBOXES: TableDefinition<&str, (u64, &[u8], &str)> = TableDefinition::new("inboxes");

/// (inbox number, seq) → (message id, time in Unix ms, payload). Payloads are
/// whatever galed was given: end-to-end encrypted, never parsed here.
pub const MESSAGES: TableDefinition<MessageKey, MessageValue> = TableDefinition::new("messages");

/// (inbox number, seq).
pub type MessageKey = (u64, u64);
/// (message id, time in Unix ms, payload).
pub type MessageValue = ([u8; 16], u64, &'static [u8]);

/// (inbox number, device) → (last seq acked, drops not yet told).
pub const DEVICES: TableDefinition<(u64, &str), (u64, u64)> = TableDefinition::new("devices");

/// Inbox number → the next seq to hand out, so sequence numbers never go
/// back, even when every message was deleted.
pub const NEXT_SEQ: TableDefinition<u64, u64> = TableDefinition::new("next_seq");
