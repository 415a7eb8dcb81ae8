//! The thin tokio adapter: frames and messages over any `AsyncRead` / `AsyncWrite`
//! (a `TcpStream` in master, worker and client).
//!
//! Reading checks each frame header with [`Frame::check`] before buffering its data, so a peer
//! can never make a reader hold more than one maximum frame beyond what it already sent. Every
//! read method is cancel-safe (all state lives in the reader), so it can sit in a
//! `tokio::select!` next to a shutdown signal. After any [`ReadError`] the stream is out of sync:
//! answer with [`ReadError::reason`] if there is one, then close.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::control::Control;
use crate::error::{DecodeError, EncodeError, FrameError, LinkError, ReassemblyError};
use crate::frame::Frame;
use crate::link::{LinkOpener, LinkSealer};
use crate::message::{Message, Progress, Reassembler, split_payload};
use crate::request::Request;
use crate::response::Response;
use crate::types::Reason;

/// Why reading from a stream failed. All are fatal to the connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection in the middle of a frame or a packetised message.
    #[error("connection closed in the middle of a message ({buffered_bytes} bytes buffered)")]
    UnexpectedEof {
        /// Bytes of the unfinished frame.
        buffered_bytes: usize,
    },
    /// The bytes are not a frame.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// The packets do not make a message.
    #[error("bad packet sequence: {0}")]
    Reassembly(#[from] ReassemblyError),
    /// A link frame failed its integrity check.
    #[error("link integrity: {0}")]
    Link(#[from] LinkError),
    /// A typed read got a message that does not decode (only from `read_response` and
    /// `read_control`).
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
}

impl ReadError {
    /// The reason to put in an `error` return before closing, when the peer can be told:
    /// `unsupported_version`, `too_large`, `malformed`; `None` for IO errors and EOF.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Io(_) | Self::UnexpectedEof { .. } => None,
            Self::Frame(FrameError::UnsupportedVersion { .. }) => Some(Reason::UnsupportedVersion),
            Self::Frame(FrameError::DataTooLarge { .. })
            | Self::Reassembly(ReassemblyError::BodyTooLarge { .. }) => Some(Reason::TooLarge),
            // A bad MAC, a replayed or skipped frame: the link closes without an answer
            // (docs/PROTOCOL.md).
            Self::Link(_) => None,
            Self::Decode(error) => Some(error.reason()),
            Self::Frame(_) | Self::Reassembly(_) => Some(Reason::Malformed),
        }
    }
}

/// Why writing to a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The socket failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The message breaks a limit; nothing was written.
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// The link's sequence numbers are exhausted.
    #[error("link integrity: {0}")]
    Link(#[from] LinkError),
}

/// The least spare room a reader offers the socket on each read, so that pipelined frames come
/// in with one system call instead of one each. Small enough for thousands of idle connections.
pub const READ_CHUNK_BYTES: usize = 4 * 1024;

/// What a master–worker link offers each read: a burst of relays or replies in one call.
pub const LINK_READ_CHUNK_BYTES: usize = 64 * 1024;

/// Buffered frames past which [`FrameWriter::feed_message`] writes them out before flushing.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Reads frames and whole messages from an `AsyncRead`.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// The least spare room offered to each read ([`READ_CHUNK_BYTES`] unless set).
    read_chunk_bytes: usize,
    opener: Option<LinkOpener>,
    reassembler: Reassembler,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with the default limits and no link integrity.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            read_chunk_bytes: READ_CHUNK_BYTES,
            opener: None,
            reassembler: Reassembler::default(),
        }
    }

    /// From the next message on, refuses message bodies over `bytes` (at most
    /// [`crate::limits::MESSAGE_BODY_BYTES_MAX`], the default) with
    /// `ReassemblyError::BodyTooLarge`: a server reading requests sets
    /// [`crate::limits::REQUEST_BODY_BYTES_MAX`]. A message being reassembled is dropped.
    pub fn set_body_bytes_max(&mut self, bytes: usize) {
        self.reassembler = Reassembler::new(bytes);
    }

    /// Offers each read at least `bytes` of room: more for a busy link carrying many
    /// connections' messages (one read then takes in a whole burst), less for many idle peers.
    pub fn set_read_chunk_bytes(&mut self, bytes: usize) {
        self.read_chunk_bytes = bytes.max(1);
    }

    /// From now on, every frame must be sealed and is opened with `opener` (after the link
    /// handshake).
    pub fn set_opener(&mut self, opener: LinkOpener) {
        self.opener = Some(opener);
    }

    /// The next frame (opened, on a sealed link), or `None` when the peer closed the connection
    /// cleanly between frames.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            match Frame::check(&self.buf) {
                Ok(len) => {
                    let mut frame = Frame::parse(&self.buf[..len])?;
                    self.buf.advance(len);
                    if let Some(opener) = &mut self.opener {
                        opener.open(&mut frame)?;
                    }
                    return Ok(Some(frame));
                }
                Err(FrameError::Incomplete { needed_bytes }) => {
                    // Room for what the frame needs, and at least a read chunk: one read then
                    // takes in as many pipelined frames as the peer has sent.
                    self.buf.reserve(needed_bytes.max(self.read_chunk_bytes));
                    if self.inner.read_buf(&mut self.buf).await? == 0 {
                        if self.buf.is_empty() {
                            return Ok(None);
                        }
                        return Err(ReadError::UnexpectedEof { buffered_bytes: self.buf.len() });
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The next whole message, its packets reassembled; `None` on a clean close between
    /// messages.
    pub async fn read_message(&mut self) -> Result<Option<Message>, ReadError> {
        self.read_message_with_progress(|_, _| {}).await
    }

    /// Like [`FrameReader::read_message`], calling `on_progress(received, max)` after each
    /// packet of a message of more than one packet (spec 4.7.1's progress).
    pub async fn read_message_with_progress(
        &mut self,
        mut on_progress: impl FnMut(u32, u32),
    ) -> Result<Option<Message>, ReadError> {
        loop {
            let Some(frame) = self.read_frame().await? else {
                return match self.reassembler.progress() {
                    None => Ok(None),
                    Some(_) => Err(ReadError::UnexpectedEof { buffered_bytes: 0 }),
                };
            };
            let max = frame.packet_max();
            match self.reassembler.push(frame)? {
                Progress::Partial { received, max } => on_progress(received, max),
                Progress::Complete(message) => {
                    if max > 1 {
                        on_progress(max, max);
                    }
                    return Ok(Some(message));
                }
            }
        }
    }

    /// The next request, for a server: `Some(Ok(request))`, or `Some(Err(answer))` when the
    /// message was framed correctly but does not decode, where `answer` is the fail return to
    /// send (the connection goes on). `None` on a clean close.
    pub async fn read_request(&mut self) -> Result<Option<Result<Request, Response>>, ReadError> {
        let Some(message) = self.read_message().await? else {
            return Ok(None);
        };
        Ok(Some(Request::decode(&message).map_err(|e| Response::for_decode_error(&message, &e))))
    }

    /// The next response, for a client; a message that does not decode is an error.
    pub async fn read_response(&mut self) -> Result<Option<Response>, ReadError> {
        match self.read_message().await? {
            Some(message) => Ok(Some(Response::decode(&message)?)),
            None => Ok(None),
        }
    }

    /// The next control message, on the master–worker link.
    pub async fn read_control(&mut self) -> Result<Option<Control>, ReadError> {
        match self.read_message().await? {
            Some(message) => Ok(Some(Control::decode(&message)?)),
            None => Ok(None),
        }
    }

    /// True when a whole frame is already buffered, so the next read returns without waiting
    /// for the peer. Lets a caller that answers frame by frame flush its answers only when it
    /// is about to wait.
    pub fn has_buffered_frame(&self) -> bool {
        Frame::check(&self.buf).is_ok()
    }

    /// The underlying reader. Bytes already buffered are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes frames and whole messages to an `AsyncWrite`.
///
/// The `write_*` methods write and flush at once. The `feed_*` methods only encode into the
/// writer's buffer (writing it out when it passes [`WRITE_BUFFER_BYTES`]) until
/// [`FrameWriter::flush`]: a server answering many requests at once sends them with one system
/// call. Frames are appended whole and in order, so messages never interleave.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    sealer: Option<LinkSealer>,
    /// Encoded frames not written yet.
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer with no link integrity.
    pub fn new(inner: W) -> Self {
        Self { inner, sealer: None, buf: Vec::new() }
    }

    /// From now on, every frame is sealed with `sealer` (after the link handshake).
    pub fn set_sealer(&mut self, sealer: LinkSealer) {
        self.sealer = Some(sealer);
    }

    /// Appends one frame to the buffer, sealed on a sealed link.
    fn push_frame(&mut self, mut frame: Frame) -> Result<(), WriteError> {
        if let Some(sealer) = &mut self.sealer {
            sealer.seal(&mut frame)?;
        }
        frame.write_to(&mut self.buf);
        Ok(())
    }

    /// Writes and flushes one frame (sealing it on a sealed link), after anything fed before.
    pub async fn write_frame(&mut self, frame: Frame) -> Result<(), WriteError> {
        self.push_frame(frame)?;
        self.flush().await
    }

    /// Writes a whole message as packets of the largest size, back to back, then flushes.
    pub async fn write_message(&mut self, message: &Message) -> Result<(), WriteError> {
        self.write_message_in_packets(message, crate::limits::FRAME_DATA_BYTES_MAX).await
    }

    /// Writes a whole message as packets of at most `packet_data_bytes` data bytes each, then
    /// flushes. The packets of one message are never interleaved with another message's.
    pub async fn write_message_in_packets(
        &mut self,
        message: &Message,
        packet_data_bytes: usize,
    ) -> Result<(), WriteError> {
        self.feed_message_in_packets(message, packet_data_bytes).await?;
        self.flush().await
    }

    /// Like [`FrameWriter::write_message_in_packets`] without the flush: the packets wait in
    /// the buffer (written out only when it passes [`WRITE_BUFFER_BYTES`]) for
    /// [`FrameWriter::flush`]. A message that breaks a limit adds nothing.
    pub async fn feed_message_in_packets(
        &mut self,
        message: &Message,
        packet_data_bytes: usize,
    ) -> Result<(), WriteError> {
        for frame in split_payload(message, packet_data_bytes)? {
            self.push_frame(frame)?;
            if self.buf.len() >= WRITE_BUFFER_BYTES {
                self.inner.write_all(&self.buf).await?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Feeds a whole message as packets of the largest size (see
    /// [`FrameWriter::feed_message_in_packets`]).
    pub async fn feed_message(&mut self, message: &Message) -> Result<(), WriteError> {
        self.feed_message_in_packets(message, crate::limits::FRAME_DATA_BYTES_MAX).await
    }

    /// Encodes and feeds a request (sent at the next [`FrameWriter::flush`]).
    pub async fn feed_request(&mut self, request: &Request) -> Result<(), WriteError> {
        self.feed_message(&request.encode()?).await
    }

    /// Writes `first` and whatever is queued behind it, with one flush: `next_queued` takes the
    /// next queued item without waiting (a channel's `try_recv().ok()`). After each round of
    /// taking what is queued it yields once, so producers that are ready can add theirs, and it
    /// stops gathering when a round adds nothing (the buffer is written out each time it
    /// reaches [`WRITE_BUFFER_BYTES`], so a long burst goes out as it is gathered).
    /// `encode` turns an item into its message. A writer task that carries bursts (a link with
    /// an interval's answers) then makes one system call per burst instead of one per message.
    pub async fn write_gathered<T>(
        &mut self,
        first: T,
        mut next_queued: impl FnMut() -> Option<T>,
        encode: impl Fn(T) -> Result<Message, EncodeError>,
    ) -> Result<(), WriteError> {
        self.feed_message(&encode(first)?).await?;
        loop {
            tokio::task::yield_now().await;
            let mut more = false;
            while let Some(item) = next_queued() {
                self.feed_message(&encode(item)?).await?;
                more = true;
            }
            if !more {
                break;
            }
        }
        self.flush().await
    }

    /// Bytes fed and not written yet.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything fed so far and flushes the stream.
    pub async fn flush(&mut self) -> Result<(), WriteError> {
        if !self.buf.is_empty() {
            let written = self.inner.write_all(&self.buf).await;
            self.buf.clear();
            written?;
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// Encodes and writes a request.
    pub async fn write_request(&mut self, request: &Request) -> Result<(), WriteError> {
        self.write_message(&request.encode()?).await
    }

    /// Encodes and writes a response (a `data` payload goes out in numbered packets).
    pub async fn write_response(&mut self, response: &Response) -> Result<(), WriteError> {
        self.write_message(&response.encode()?).await
    }

    /// Encodes and writes a control message.
    pub async fn write_control(&mut self, control: &Control) -> Result<(), WriteError> {
        self.write_message(&control.encode()?).await
    }

    /// Shuts the write side down (TCP FIN) after flushing.
    pub async fn shutdown(&mut self) -> Result<(), WriteError> {
        self.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// A [`FrameReader`] and a [`FrameWriter`] over the two halves of one stream. Use
/// [`FramedStream::into_split`] to read and write from different tasks. The socket closes when
/// both halves are dropped; to close only the sending side (TCP FIN), call
/// [`FrameWriter::shutdown`].
#[derive(Debug)]
pub struct FramedStream<S> {
    reader: FrameReader<ReadHalf<S>>,
    writer: FrameWriter<WriteHalf<S>>,
}

impl<S: AsyncRead + AsyncWrite> FramedStream<S> {
    /// Frames `stream` (a `TcpStream`, or one end of `tokio::io::duplex` in tests).
    pub fn new(stream: S) -> Self {
        let (read, write) = tokio::io::split(stream);
        Self { reader: FrameReader::new(read), writer: FrameWriter::new(write) }
    }

    /// The read side.
    pub fn reader(&mut self) -> &mut FrameReader<ReadHalf<S>> {
        &mut self.reader
    }

    /// The write side.
    pub fn writer(&mut self) -> &mut FrameWriter<WriteHalf<S>> {
        &mut self.writer
    }

    /// Seals both directions of a master–worker link after the handshake. A sealed link
    /// carries many connections' messages, so its reads also take in up to
    /// [`LINK_READ_CHUNK_BYTES`] at a time.
    pub fn seal_link(&mut self, sealer: LinkSealer, opener: LinkOpener) {
        self.writer.set_sealer(sealer);
        self.reader.set_opener(opener);
        self.reader.set_read_chunk_bytes(LINK_READ_CHUNK_BYTES);
    }

    /// The two sides, for separate tasks.
    pub fn into_split(self) -> (FrameReader<ReadHalf<S>>, FrameWriter<WriteHalf<S>>) {
        (self.reader, self.writer)
    }

    /// See [`FrameReader::read_frame`].
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        self.reader.read_frame().await
    }

    /// See [`FrameReader::read_message`].
    pub async fn read_message(&mut self) -> Result<Option<Message>, ReadError> {
        self.reader.read_message().await
    }

    /// See [`FrameReader::read_request`].
    pub async fn read_request(&mut self) -> Result<Option<Result<Request, Response>>, ReadError> {
        self.reader.read_request().await
    }

    /// See [`FrameReader::read_response`].
    pub async fn read_response(&mut self) -> Result<Option<Response>, ReadError> {
        self.reader.read_response().await
    }

    /// See [`FrameReader::read_control`].
    pub async fn read_control(&mut self) -> Result<Option<Control>, ReadError> {
        self.reader.read_control().await
    }

    /// See [`FrameWriter::write_frame`].
    pub async fn write_frame(&mut self, frame: Frame) -> Result<(), WriteError> {
        self.writer.write_frame(frame).await
    }

    /// See [`FrameWriter::write_message`].
    pub async fn write_message(&mut self, message: &Message) -> Result<(), WriteError> {
        self.writer.write_message(message).await
    }

    /// See [`FrameWriter::write_request`].
    pub async fn write_request(&mut self, request: &Request) -> Result<(), WriteError> {
        self.writer.write_request(request).await
    }

    /// See [`FrameWriter::write_response`].
    pub async fn write_response(&mut self, response: &Response) -> Result<(), WriteError> {
        self.writer.write_response(response).await
    }

    /// See [`FrameWriter::write_control`].
    pub async fn write_control(&mut self, control: &Control) -> Result<(), WriteError> {
        self.writer.write_control(control).await
    }
}
