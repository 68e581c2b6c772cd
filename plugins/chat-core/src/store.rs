//! The chat's storage contract.
//!
//! Writes are applied in the order their futures are first polled: a backend queues a write
//! on that first poll, before it waits. The broker starts each publish's hooks in arrival
//! order, so a sender's messages are stored in the order they were sent even while several
//! wait for their commits at once.
//!
//! Every write returns once it is durable (committed, and on disk when the backend is
//! configured to fsync): the chat acknowledges a message to its sender only after
//! [`ChatStore::append_message`] returns. Implementations are expected to batch concurrent
//! calls into one commit (group commit); callers do not batch themselves.
//!
//! [`ChatStore::append_message_applied`] splits that wait in two, so that delivering a
//! message to its recipients need not wait for the disk: the first step returns once the
//! message is *applied* (seqs final, visible to reads, safe from a crash of the process),
//! and a [`Durable`] completes once it is durable. The sender's acknowledgement still waits
//! for the second.
//!
//! Inbox entries hold an encoded `seed.v1.Envelope` *without* its `seq` field. Protobuf
//! merges concatenated encodings, so a sender prepends the seq field (`0x08`, varint) to the
//! stored bytes to get the envelope it sends: no decode, no re-encode.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (e.g. a user id at registration).
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend failed; nothing of the call was committed.
    #[error("store backend: {0}")]
    Backend(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    /// An argon2 PHC string.
    pub password_hash: String,
    /// Unix ms.
    pub created_at: u64,
}

/// A refresh token, stored by its SHA-256 hash (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub token_hash: [u8; 32],
    pub user_id: String,
    pub device_id: String,
    /// Unix ms.
    pub expires_at: u64,
}

/// One inbox entry to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub user_id: String,
    /// Encoded `seed.v1.Envelope` without `seq`.
    pub envelope: Bytes,
    /// A device of `user_id` that must not receive this entry (the device that sent the
    /// message, for the copy in the sender's own inbox). Its cursor passes over it.
    pub skip_device: Option<String>,
}

/// A chat message to store, with the inbox entries that deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Server-assigned, unique, time-sortable; below 2^63 (backends keep it in a signed
    /// 64-bit integer, and a larger id is refused with [`StoreError::Backend`]). An id
    /// already stored in the same chat is refused with [`StoreError::Conflict`].
    pub id: u64,
    /// The conversation: `dm:{a}:{b}` with a < b, or `g:{group}`.
    pub chat: String,
    pub sender: String,
    /// The sender's idempotency key; a second message with the same (sender, key) is a
    /// duplicate.
    pub client_msg_id: Option<String>,
    /// Encoded `seed.v1.Message` (id and from set), as history returns it.
    pub body: Bytes,
    pub entries: Vec<NewEntry>,
}

/// What [`ChatStore::append_message`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored; the seq each entry got, in the order of `entries`.
    New { seqs: Vec<u64> },
    /// The sender already sent this `client_msg_id`: nothing was stored; the first
    /// message's id.
    Duplicate { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub seq: u64,
    /// Encoded `seed.v1.Envelope` without `seq`.
    pub envelope: Bytes,
    pub skip_device: Option<String>,
    /// Unix ms.
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub sender: String,
    /// Encoded `seed.v1.Message`.
    pub body: Bytes,
}

/// The receipt watermarks kept per (reader, chat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watermark {
    Delivered,
    Read,
}

/// What a [`Durable`] waits for.
type Pending = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Completes once an applied write is durable: see [`ChatStore::append_message_applied`].
#[must_use = "an applied write may not be acknowledged before it is durable"]
pub struct Durable(Option<Pending>);

impl Durable {
    /// Already durable.
    pub fn now() -> Durable {
        Durable(None)
    }

    /// Durable once `done` completes with `Ok`.
    pub fn later(done: impl Future<Output = Result<(), StoreError>> + Send + 'static) -> Durable {
        Durable(Some(Box::pin(done)))
    }

    /// Waits until the write is durable. An error means it may not be: the write must not
    /// be acknowledged.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(done) => done.await,
        }
    }
}

impl fmt::Debug for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Durable(pending)" } else { "Durable(now)" })
    }
}

#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    // Accounts.

    /// [`StoreError::Conflict`] if the user exists.
    async fn create_user(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError>;
    async fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError>;
    /// Removes and returns a refresh token (each is used once: refresh rotates it).
    async fn take_refresh_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshToken>, StoreError>;
    /// Logs a device out: deletes its refresh tokens and records `at` (unix ms), before
    /// which its access tokens are no longer valid.
    async fn revoke_device(
        &self,
        user_id: &str,
        device_id: &str,
        at: u64,
    ) -> Result<(), StoreError>;
    async fn device_revoked_at(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<u64>, StoreError>;

    // Blocks.

    /// `user` blocks (`on`) or unblocks `blocked`.
    async fn set_blocked(&self, user: &str, blocked: &str, on: bool) -> Result<(), StoreError>;
    /// Whether `by` has blocked `user`.
    async fn is_blocked(&self, user: &str, by: &str) -> Result<bool, StoreError>;
    /// Everyone `user` has blocked, sorted.
    async fn blocked_by(&self, user: &str) -> Result<Vec<String>, StoreError>;

    // Messages and inboxes.

    /// Stores a message and its inbox entries atomically, each entry taking the next seq of
    /// its user's inbox (seqs start at 1 and increase by 1, except that after a power cut
    /// they may jump; see [`ChatStore::append_message_applied`]). Idempotent on
    /// (sender, client_msg_id).
    async fn append_message(&self, message: NewMessage) -> Result<Appended, StoreError>;
    /// [`ChatStore::append_message`] in two steps, so delivery need not wait for the disk.
    /// Returns once the message is *applied*: its seqs are final, every read sees it, and a
    /// crash of this process can no longer lose it. The [`Durable`] completes once it is as
    /// durable as `append_message` makes it; nothing may be acknowledged to the sender
    /// before then. An applied message that a power cut loses had seqs that the backend
    /// never hands out again (a recipient may hold them). The default does both steps
    /// before returning.
    async fn append_message_applied(
        &self,
        message: NewMessage,
    ) -> Result<(Appended, Durable), StoreError> {
        Ok((self.append_message(message).await?, Durable::now()))
    }
    /// Stores inbox entries that are not messages (receipts, group events); returns their
    /// seqs in order.
    async fn append_entries(&self, entries: Vec<NewEntry>) -> Result<Vec<u64>, StoreError>;
    /// Entries of `user`'s inbox with seq > `after`, in seq order, at most `limit`.
    async fn inbox(
        &self,
        user_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError>;
    /// The highest seq ever assigned in `user`'s inbox (0 before its first entry). Expiry
    /// does not lower it: seqs never restart.
    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError>;
    /// The highest seq this device acknowledged (0 if none).
    async fn cursor(&self, user_id: &str, device_id: &str) -> Result<u64, StoreError>;
    /// Moves a device's cursor forward (never back: a lower `seq` is ignored). Reads see it
    /// at once; a backend may make it durable a little later, as a cursor that a power cut
    /// sets back only delivers entries again.
    async fn set_cursor(&self, user_id: &str, device_id: &str, seq: u64) -> Result<(), StoreError>;
    /// A chat's messages with id < `before` (all when None), newest first, at most `limit`.
    async fn history(
        &self,
        chat: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Moves `reader`'s watermark in `chat` forward to `up_to`; true if it moved. A backend
    /// may make it durable a little later: a watermark that a power cut sets back only
    /// sends its receipt again.
    async fn advance_watermark(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
        up_to: u64,
    ) -> Result<bool, StoreError>;
    /// [`ChatStore::advance_watermark`] and, if the watermark moved, `entries` (the receipts
    /// the move causes) appended in the same write; the entries' seqs if it moved, None if
    /// not. One write instead of two in a row: the cost of a receipt is mostly the trips
    /// to the store. Answers once applied: nobody is acknowledged on it, so a backend may
    /// make it durable a little later (what a power cut loses of it, the next
    /// acknowledgement or read sends again). The default makes the two calls, one after
    /// the other.
    async fn advance_watermark_and_append(
        &self,
        kind: Watermark,
        reader: &str,
        chat: &str,
        up_to: u64,
        entries: Vec<NewEntry>,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        if !self.advance_watermark(kind, reader, chat, up_to).await? {
            return Ok(None);
        }
        self.append_entries(entries).await.map(Some)
    }
    async fn watermark(&self, kind: Watermark, reader: &str, chat: &str)
    -> Result<u64, StoreError>;
    /// Deletes inbox entries created before `before` (unix ms); returns how many. Seqs,
    /// cursors and messages (history) are untouched.
    async fn expire_entries(&self, before: u64) -> Result<u64, StoreError>;
}

/// The chat key of a direct conversation: the same for both sides.
pub fn dm_chat(a: &str, b: &str) -> String {
    if a <= b { format!("dm:{a}:{b}") } else { format!("dm:{b}:{a}") }
}

/// The chat key of a group conversation.
pub fn group_chat(group: &str) -> String {
    format!("g:{group}")
}
