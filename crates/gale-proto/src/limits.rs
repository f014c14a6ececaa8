//! Protocol limits. Both sides enforce every one of them.

/// Newest protocol version spoken by this implementation.
pub const PROTOCOL_VERSION: u16 = 3;
/// The first version with RESUME and RESUMED.
pub const RESUME_VERSION: u16 = 2;
/// The first version with inboxes (INBOX_HELLO to INBOX_GAP).
pub const INBOX_VERSION: u16 = 3;
/// Oldest protocol version this implementation still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// Magic bytes at the start of a HELLO body.
pub const MAGIC: [u8; 4] = *b"GALE";

/// Default (and largest) frame size, counted from the type byte to the end of the frame.
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024;
/// Smallest maximum frame size a peer may announce in its handshake.
pub const MIN_MAX_FRAME: u32 = 4096;
/// Size of the frame header: a u32 length and a u8 type.
pub const FRAME_HEADER_LEN: usize = 5;

/// Longest location, in bytes of UTF-8.
pub const MAX_LOCATION_LEN: usize = 255;
/// Most dot-separated segments in a location's local part.
pub const MAX_SEGMENTS: usize = 32;
/// Longest domain label (between dots), as in DNS.
pub const MAX_DOMAIN_LABEL: usize = 63;
/// Most locations one message may be addressed to.
pub const MAX_LOCATIONS: usize = 32;
/// Most entries in one SUBSCRIBE or UNSUBSCRIBE frame.
pub const MAX_SUB_ENTRIES: usize = 4096;
/// Most entries in one LINK_LOSSAGE frame.
pub const MAX_LOSS_ENTRIES: usize = 4096;
/// Most subscription entries one connection may hold in total.
pub const MAX_SUBS_PER_CONNECTION: usize = 65_536;
/// Most hops a message may travel (between servers) before it is dropped.
pub const MAX_HOPS: u8 = 16;
/// Longest free text (agent names, error texts, fragment names).
pub const MAX_SHORT_TEXT: usize = 1024;
/// Deepest nesting of fragment lists.
pub const MAX_FRAGMENT_DEPTH: usize = 8;
/// INTEREST entries a server holds for one link unless configured otherwise, and
/// what a sender assumes of a peer that announced no LINK_LIMITS.
pub const DEFAULT_MAX_LINK_INTEREST: u32 = 65_536;
