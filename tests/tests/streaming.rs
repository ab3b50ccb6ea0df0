//! `/attach` and `/portForward` of a real agent on a real containerd, over mutual TLS, in both
//! protocols the kubelet's streaming endpoints speak. The agent asks containerd (CRI Attach /
//! PortForward) for a URL on its streaming server and proxies the HTTP/1.1 upgrade there; these
//! tests check that bytes cross it both ways.
//!
//! - WebSocket with the v4 channel framing (apimachinery wsstream), as a direct client speaks
//!   it. Every binary message is one channel byte, then data. Attach: 0 stdin, 1 stdout,
//!   2 stderr, 3 error. Port-forward: a (data, error) pair per requested port, in order; each
//!   channel's first two bytes are its port, little-endian. Containerd 1.6 has v4, not v5.
//! - SPDY/3.1 (`POST` + `Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version`), which is what an API
//!   server speaks to the kubelet: kubectl's own SPDY passed through, or (since 1.31) kubectl's
//!   WebSocket translated to SPDY for attach and SPDY tunnelled through it for port-forward.
//!   The client opens one stream per channel, named by a `streamType` header (port-forward
//!   adds `port` and `requestID`); the tests give them the WebSocket channel numbers.

use anyhow::{Context, Result, anyhow, bail};
use nodelet_tests::pki::Pki;
use nodelet_tests::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// Ceiling for "it happened", never a measurement.
const T: Duration = Duration::from_secs(60);
/// Longest a single read may block before the test gives up on the connection.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// The remotecommand protocol (WebSocket subprotocol, or SPDY X-Stream-Protocol-Version).
const CHANNEL_V4: &str = "v4.channel.k8s.io";
/// The port-forward protocol over SPDY.
const PORT_FORWARD_V1: &str = "portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A [`Node`] with `$opts`, or the end of the test when the machine cannot run one (a skip,
/// or a failure under NODELET_REQUIRE_ALL=1).
macro_rules! node {
    ($opts:expr) => {
        match Node::start($opts)? {
            Some(n) => n,
            None => return Ok(()),
        }
    };
}

/// A client of the agent's secure port. It trusts the agent's self-signed serving certificate
/// (`<root-dir>/pki/kubelet.crt`) and presents the test client certificate.
struct Kubelet {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
}

impl Kubelet {
    fn new(node: &Node, pki: &Pki, port: u16) -> Result<Self> {
        let serving = node.root.join("pki").join("kubelet.crt");
        node.wait("the agent's serving certificate", T, || {
            Ok(serving.is_file().then_some(()))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&serving)? {
            roots.add(cert?)?;
        }
        let chain = CertificateDer::pem_file_iter(pki.path("client.crt"))?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(pki.path("client.key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Kubelet {
            port,
            tls: Arc::new(tls),
        })
    }

    fn connect(&self) -> Result<Tls> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), "localhost".try_into()?)?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }

    /// Status code and body of a plain (non-upgrade) request.
    fn request(&self, method: &str, path: &str) -> Result<(u16, String)> {
        let mut s = self.connect()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        s.flush()?;
        let mut raw = Vec::new();
        if let Err(e) = s.read_to_end(&mut raw) {
            // A peer that closes without close_notify still sent the whole response.
            if e.kind() != ErrorKind::UnexpectedEof {
                return Err(e.into());
            }
        }
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        Ok((code, body.to_string()))
    }

    /// Upgrades `path` to a WebSocket with the v4 channel protocol: the channels, or the
    /// refusal's status and body.
    fn websocket(&self, path: &str) -> Result<Result<Channels, (u16, String)>> {
        let mut req = format!("wss://localhost:{}{path}", self.port).into_client_request()?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(CHANNEL_V4),
        );
        match tungstenite::client(req, self.connect()?) {
            Ok((ws, resp)) => {
                let chosen = resp.headers().get("Sec-WebSocket-Protocol");
                if chosen.and_then(|v| v.to_str().ok()) != Some(CHANNEL_V4) {
                    bail!("{path}: server chose protocol {chosen:?}");
                }
                Ok(Ok(Channels { ws }))
            }
            Err(HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default());
                Ok(Err((r.status().as_u16(), body.trim().to_string())))
            }
            Err(e) => Err(anyhow!("{path}: WebSocket handshake failed: {e}")),
        }
    }

    /// Upgrades `path` to SPDY/3.1 with `protocol` as client-go's SPDY dialer does (`POST`):
    /// the session, or the refusal's status and body.
    fn spdy(&self, path: &str, protocol: &str) -> Result<Result<Spdy, (u16, String)>> {
        let mut s = self.connect()?;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
             Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\
             Content-Length: 0\r\n\r\n"
        )?;
        s.flush()?;
        // Byte by byte, so nothing after the head (the first SPDY frames) is swallowed.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b)
                .with_context(|| format!("{path}: response head"))?;
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if code != 101 {
            let len = header("content-length").and_then(|l| l.parse().ok());
            let mut body = vec![0u8; len.unwrap_or(0)];
            s.read_exact(&mut body)?;
            return Ok(Err((
                code,
                String::from_utf8_lossy(&body).trim().to_string(),
            )));
        }
        if header("x-stream-protocol-version") != Some(protocol) {
            bail!("{path}: server chose protocol {head:?}");
        }
        Ok(Ok(Spdy {
            s,
            next_id: 1,
            header_stream_started: false,
            channels: BTreeMap::new(),
            unreplied: BTreeSet::new(),
            inbuf: Vec::new(),
            pending: VecDeque::new(),
        }))
    }

    /// `upgrade` retried while the agent answers 404 (its pod status has not caught up with the
    /// container yet); any other refusal fails.
    fn when_running<S>(
        &self,
        node: &Node,
        path: &str,
        upgrade: impl Fn(&str) -> Result<Result<S, (u16, String)>>,
    ) -> Result<S> {
        node.wait(&format!("{path} to upgrade"), T, || match upgrade(path)? {
            Ok(s) => Ok(Some(s)),
            Err((404, _)) => Ok(None),
            Err((code, body)) => bail!("{path}: {code} {body}"),
        })
    }

    /// The status and body of an upgrade the agent must refuse.
    fn refused<S: Streams>(
        &self,
        path: &str,
        upgrade: impl Fn(&str) -> Result<Result<S, (u16, String)>>,
    ) -> Result<(u16, String)> {
        match upgrade(path)? {
            Ok(mut s) => {
                s.close();
                bail!("{path} upgraded")
            }
            Err(r) => Ok(r),
        }
    }
}

/// What arrived so far, concatenated per channel.
#[derive(Debug, Default)]
struct Received(BTreeMap<u8, Vec<u8>>);

impl Received {
    fn bytes(&self, channel: u8) -> &[u8] {
        self.0.get(&channel).map_or(&[], Vec::as_slice)
    }

    fn text(&self, channel: u8) -> String {
        String::from_utf8_lossy(self.bytes(channel)).into_owned()
    }

    /// The port a port-forward channel announced in its first two bytes.
    fn port(&self, channel: u8) -> Option<u16> {
        match self.bytes(channel) {
            [lo, hi, ..] => Some(u16::from_le_bytes([*lo, *hi])),
            _ => None,
        }
    }

    /// A port-forward channel's data after its port header.
    fn payload(&self, channel: u8) -> &[u8] {
        self.bytes(channel).get(2..).unwrap_or_default()
    }
}

/// One step of reading a [`Streams`].
enum Recv {
    /// Data on a channel.
    Data(u8, Vec<u8>),
    /// The server closed the connection.
    Closed,
    /// Nothing arrived in the time given.
    Idle,
}

/// Numbered byte channels over one upgraded connection, whatever the framing.
trait Streams {
    fn send(&mut self, channel: u8, data: &[u8]) -> Result<()>;

    /// The next data, waiting at most `timeout` (else [`IO_TIMEOUT`], then failing).
    fn recv(&mut self, timeout: Option<Duration>) -> Result<Recv>;

    fn close(&mut self);

    /// Reads into `got` until `done` holds; fails if the server closes first.
    fn read_until(
        &mut self,
        got: &mut Received,
        what: &str,
        mut done: impl FnMut(&Received) -> bool,
    ) -> Result<()>
    where
        Self: Sized,
    {
        while !done(got) {
            match self
                .recv(None)
                .with_context(|| format!("waiting for {what}; so far {got:?}"))?
            {
                Recv::Data(c, d) => got.0.entry(c).or_default().extend(d),
                Recv::Closed | Recv::Idle => {
                    bail!("stream closed while waiting for {what}; got {got:?}")
                }
            }
        }
        Ok(())
    }
}

/// Whether an I/O error is a read timeout.
fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A WebSocket speaking a v4 channel protocol.
struct Channels {
    ws: WebSocket<Tls>,
}

impl Streams for Channels {
    fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(channel);
        msg.extend_from_slice(data);
        self.ws.send(Message::binary(msg))?;
        Ok(())
    }

    fn recv(&mut self, timeout: Option<Duration>) -> Result<Recv> {
        self.ws
            .get_ref()
            .sock
            .set_read_timeout(Some(timeout.unwrap_or(IO_TIMEOUT)))?;
        loop {
            match self.ws.read() {
                Ok(Message::Binary(b)) => {
                    if let Some((c, data)) = b.split_first() {
                        return Ok(Recv::Data(*c, data.to_vec()));
                    }
                }
                Ok(Message::Close(_))
                | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(Recv::Closed);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if timeout.is_some() && timed_out(&e) => {
                    return Ok(Recv::Idle);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn close(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// SPDY/3.1 control frame types used here.
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// A client's SPDY/3.1 session, framed as moby/spdystream (client-go's SPDY) reads it.
/// Header blocks must be one zlib stream across frames, each frame ending on a sync flush;
/// this client writes that stream as stored (uncompressed) deflate blocks and without a preset
/// dictionary, which any inflater accepts, so it needs neither a compressor nor SPDY's header
/// dictionary.
struct Spdy {
    s: Tls,
    /// Client streams take odd ids.
    next_id: u32,
    /// Whether the zlib header of the header-block stream went out.
    header_stream_started: bool,
    /// Stream id to channel.
    channels: BTreeMap<u32, u8>,
    /// Streams the server has not replied to yet.
    unreplied: BTreeSet<u32>,
    inbuf: Vec<u8>,
    /// Data read while waiting for replies.
    pending: VecDeque<(u8, Vec<u8>)>,
}

/// One frame from the server.
enum Frame {
    Control { kind: u16, payload: Vec<u8> },
    Data { id: u32, data: Vec<u8> },
}

impl Spdy {
    /// Opens a stream (SYN_STREAM) carrying `headers`, read and written as `channel`.
    fn open(&mut self, channel: u8, headers: &[(&str, &str)]) -> Result<()> {
        let mut block = Vec::new();
        block.extend(u32::try_from(headers.len())?.to_be_bytes());
        for (name, value) in headers {
            for text in [name.to_ascii_lowercase().as_bytes(), value.as_bytes()] {
                block.extend(u32::try_from(text.len())?.to_be_bytes());
                block.extend(text);
            }
        }
        let id = self.next_id;
        self.next_id += 2;
        let mut payload = Vec::new();
        payload.extend(id.to_be_bytes());
        payload.extend(0u32.to_be_bytes()); // associated stream
        payload.extend([0, 0]); // priority, slot
        if !self.header_stream_started {
            payload.extend([0x78, 0x01]); // zlib: deflate, 32 KiB window, no dictionary
            self.header_stream_started = true;
        }
        // A stored block, not final (BFINAL=0, BTYPE=00, LEN, NLEN), then an empty one: the
        // sync-flush marker, after which an inflater has handed out all the data without
        // reading past this frame.
        let len = u16::try_from(block.len())?;
        payload.push(0);
        payload.extend(len.to_le_bytes());
        payload.extend((!len).to_le_bytes());
        payload.extend(block);
        payload.extend([0, 0, 0, 0xff, 0xff]);
        self.control(SYN_STREAM, &payload)?;
        self.channels.insert(id, channel);
        self.unreplied.insert(id);
        Ok(())
    }

    /// Waits until the server accepted every stream opened so far, as client-go does before
    /// using them.
    fn wait_replies(&mut self) -> Result<()> {
        while !self.unreplied.is_empty() {
            match self.frame(None)? {
                Some(Recv::Data(c, d)) => self.pending.push_back((c, d)),
                Some(Recv::Closed | Recv::Idle) => bail!(
                    "session ended before the server replied to streams {:?}",
                    self.unreplied
                ),
                None => {}
            }
        }
        Ok(())
    }

    fn control(&mut self, kind: u16, payload: &[u8]) -> Result<()> {
        let mut f = vec![0x80, 0x03];
        f.extend(kind.to_be_bytes());
        f.push(0); // flags
        f.extend(&u32::try_from(payload.len())?.to_be_bytes()[1..]);
        f.extend(payload);
        self.s.write_all(&f)?;
        self.s.flush()?;
        Ok(())
    }

    /// Reads and handles one frame: `Some(Data)` for stream data, `Some(Closed | Idle)` at the
    /// end or on timeout, `None` for a frame handled here (replies, pings, empty data).
    fn frame(&mut self, timeout: Option<Duration>) -> Result<Option<Recv>> {
        let frame = loop {
            if let Some(f) = self.parse()? {
                break f;
            }
            self.s
                .sock
                .set_read_timeout(Some(timeout.unwrap_or(IO_TIMEOUT)))?;
            let mut buf = [0u8; 32 << 10];
            match self.s.read(&mut buf) {
                Ok(0) => return Ok(Some(Recv::Closed)),
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(Some(Recv::Closed)),
                Err(e) if timeout.is_some() && timed_out(&e) => return Ok(Some(Recv::Idle)),
                Err(e) => return Err(e.into()),
            }
        };
        let stream_id = |p: &[u8]| {
            p.get(..4)
                .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]))
        };
        match frame {
            Frame::Data { id, data } => {
                let channel = *self
                    .channels
                    .get(&id)
                    .with_context(|| format!("data on unknown stream {id}"))?;
                Ok((!data.is_empty()).then_some(Recv::Data(channel, data)))
            }
            Frame::Control { kind, payload } => match kind {
                SYN_REPLY => {
                    if let Some(id) = stream_id(&payload) {
                        self.unreplied.remove(&id);
                    }
                    Ok(None)
                }
                RST_STREAM => bail!("server reset stream: {payload:?}"),
                PING => {
                    self.control(PING, &payload)?;
                    Ok(None)
                }
                GOAWAY => Ok(Some(Recv::Closed)),
                _ => Ok(None),
            },
        }
    }

    /// Takes one whole frame off the input buffer, if it holds one.
    fn parse(&mut self) -> Result<Option<Frame>> {
        let Some(head) = self.inbuf.get(..8) else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes([0, head[5], head[6], head[7]]))?;
        if self.inbuf.len() < 8 + len {
            return Ok(None);
        }
        let head: [u8; 8] = head.try_into()?;
        let payload = self.inbuf[8..8 + len].to_vec();
        self.inbuf.drain(..8 + len);
        Ok(Some(if head[0] & 0x80 != 0 {
            Frame::Control {
                kind: u16::from_be_bytes([head[2], head[3]]),
                payload,
            }
        } else {
            Frame::Data {
                id: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
                data: payload,
            }
        }))
    }
}

impl Streams for Spdy {
    fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let id = *self
            .channels
            .iter()
            .find(|(_, c)| **c == channel)
            .context("no stream for that channel")?
            .0;
        let mut f = Vec::with_capacity(data.len() + 8);
        f.extend(id.to_be_bytes());
        f.push(0); // flags
        f.extend(&u32::try_from(data.len())?.to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.s.write_all(&f)?;
        self.s.flush()?;
        Ok(())
    }

    fn recv(&mut self, timeout: Option<Duration>) -> Result<Recv> {
        if let Some((c, d)) = self.pending.pop_front() {
            return Ok(Recv::Data(c, d));
        }
        loop {
            if let Some(r) = self.frame(timeout)? {
                return Ok(r);
            }
        }
    }

    fn close(&mut self) {
        self.s.conn.send_close_notify();
        let _ = self.s.flush();
        let _ = self.s.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// Sends numbered probe lines on `input`'s stdin until `output` (else `input`) shows the
/// container's answer to one. Attaching registers the runtime's stdout copy just after its
/// stdin copy, so the very first line could race it; probing keeps that race out of the test.
fn probe(input: &mut dyn Streams, mut output: Option<&mut dyn Streams>) -> Result<()> {
    let mut got = Received::default();
    for i in 0..60 {
        input.send(STDIN, format!("probe-{i}\n").as_bytes())?;
        loop {
            let wait = Some(Duration::from_secs(1));
            let r = match output.as_deref_mut() {
                Some(o) => o.recv(wait)?,
                None => input.recv(wait)?,
            };
            match r {
                Recv::Data(c, d) => got.0.entry(c).or_default().extend(d),
                Recv::Idle => break,
                Recv::Closed => bail!("the attached stream closed; got {got:?}"),
            }
            if got.text(STDOUT).contains("out probe-") {
                return Ok(());
            }
        }
    }
    bail!("no probe line came back over the attached stream; got {got:?}")
}

/// Reads `s` until its stdout holds `out_line` and, if given, its stderr holds `err_line`.
fn expect_lines(s: &mut impl Streams, out_line: &str, err_line: Option<&str>) -> Result<Received> {
    let mut got = Received::default();
    s.read_until(&mut got, out_line, |g| {
        g.text(STDOUT).contains(out_line) && err_line.is_none_or(|e| g.text(STDERR).contains(e))
    })?;
    Ok(got)
}

/// Sends 1 MiB of binary data to the echo listener behind channel `data`, 16 KiB at a time,
/// each chunk read back before the next (so no buffer on the way has to hold more), and
/// checks it all came back unchanged and nothing arrived on channel `error`.
fn echo_bulk(s: &mut impl Streams, got: &mut Received, data: u8, error: u8) -> Result<()> {
    let sent = noise(1 << 20);
    let (start, errors) = (got.bytes(data).len(), got.bytes(error).len());
    let mut want = start;
    for chunk in sent.chunks(16 << 10) {
        s.send(data, chunk)?;
        want += chunk.len();
        s.read_until(got, "the echo of a chunk", |g| {
            g.bytes(data).len() >= want || g.bytes(error).len() > errors
        })?;
    }
    assert_eq!(
        got.bytes(error).len(),
        errors,
        "error channel: {}",
        got.text(error)
    );
    assert!(
        got.bytes(data)[start..] == sent[..],
        "the echo differs from what was sent"
    );
    Ok(())
}

/// Container `c` answers every stdin line on stdout and on stderr, so what is written to an
/// attached stdin comes back, changed by the container, on both output channels. Container
/// `tick` has no stdin and prints a numbered line every second.
const TALKER: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: talk}\nspec:\n  \
    hostNetwork: true\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    \
    image: busybox:1.35\n    stdin: true\n    \
    command: [sh, -c, 'while read l; do echo \"out $l\"; echo \"err $l\" >&2; done']\n  \
    - name: tick\n    image: busybox:1.35\n    \
    command: [sh, -c, 'i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done']\n";

#[test]
fn attach_joins_stdin_stdout_and_stderr_of_a_running_container() -> Result<()> {
    let pki = Pki::new("e2e-user")?;
    let port = free_port()?;
    let node = node!(NodeOpts {
        extra_config: pki.server_config(port),
        ..Default::default()
    });
    let api = Kubelet::new(&node, &pki, port)?;
    node.write_manifest("talk.yaml", TALKER)?;
    let pod = format!("talk-{NODE}");
    let rw = format!("/attach/default/{pod}/c?stdin=1&stdout=1&stderr=1");
    let ws = |path: &str| api.websocket(path);

    // WebSocket A: stdin, stdout and stderr. What goes in comes back on both output channels.
    let mut a = api.when_running(&node, &rw, ws)?;
    probe(&mut a, None)?;
    a.send(STDIN, b"hello attach\n")?;
    let got = expect_lines(&mut a, "out hello attach\n", Some("err hello attach\n"))?;
    assert!(
        !got.text(STDOUT).contains("err "),
        "stderr stays on its own channel: {got:?}"
    );

    // B, alongside A, listens without writing; it sees the answers to what A writes. (It asks
    // for stdin too: over WebSocket, containerd 1.6 hands an attach that did not ask for stdin
    // an already-ended stdin, and for a container with `stdin: true` that ends the attach at
    // once, with Success. The agent only relays bytes; SPDY and the ticker below cover an
    // attach without stdin.)
    let mut b = api.when_running(
        &node,
        &format!("/attach/default/{pod}/c?stdin=1&stdout=1"),
        ws,
    )?;
    probe(&mut a, Some(&mut b))?;
    a.send(STDIN, b"to both\n")?;
    expect_lines(&mut a, "out to both\n", Some("err to both\n"))?;
    expect_lines(&mut b, "out to both\n", None)?;

    // Detaching A leaves the container's stdin open (stdinOnce is false): a new attach C can
    // still talk to it, and B still listens.
    a.close();
    let mut c = api.when_running(&node, &rw, ws)?;
    probe(&mut c, None)?;
    c.send(STDIN, b"after detach\n")?;
    expect_lines(&mut c, "out after detach\n", Some("err after detach\n"))?;
    expect_lines(&mut b, "out after detach\n", None)?;
    c.close();
    b.close();

    // SPDY, as an API server attaches: streams for error, stdin, stdout, stderr; then one
    // with stdout alone (no stdin stream at all, so it stays attached).
    let spdy = |path: &str| api.spdy(path, CHANNEL_V4);
    let mut d = api.when_running(&node, &rw, spdy)?;
    for (channel, kind) in [
        (ERROR, "error"),
        (STDIN, "stdin"),
        (STDOUT, "stdout"),
        (STDERR, "stderr"),
    ] {
        d.open(channel, &[("streamType", kind)])?;
    }
    d.wait_replies()?;
    probe(&mut d, None)?;
    d.send(STDIN, b"over spdy\n")?;
    expect_lines(&mut d, "out over spdy\n", Some("err over spdy\n"))?;
    let mut e = api.when_running(&node, &format!("/attach/default/{pod}/c?stdout=1"), spdy)?;
    e.open(ERROR, &[("streamType", "error")])?;
    e.open(STDOUT, &[("streamType", "stdout")])?;
    e.wait_replies()?;
    probe(&mut d, Some(&mut e))?;
    d.send(STDIN, b"spdy listener\n")?;
    expect_lines(&mut e, "out spdy listener\n", None)?;
    d.close();
    e.close();

    // stdout alone, from a container without stdin: lines printed after attaching arrive.
    let mut t = api.when_running(
        &node,
        &format!("/attach/default/{pod}/tick?stdout=1&stderr=1"),
        ws,
    )?;
    let mut got = Received::default();
    t.read_until(&mut got, "two tick lines", |g| {
        g.text(STDOUT).matches('\n').count() >= 2
    })?;
    t.close();
    let text = got.text(STDOUT);
    let whole = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
    let ticks: Vec<u64> = whole
        .lines()
        .map(|l| l.strip_prefix("tick-").and_then(|n| n.parse().ok()))
        .collect::<Option<_>>()
        .with_context(|| format!("not tick lines: {got:?}"))?;
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive lines, none replayed: {ticks:?}"
    );
    assert!(got.bytes(STDERR).is_empty(), "{got:?}");

    // The answers are the container's own output: they are in its log too.
    let log = node.wait("the attached lines in the container log", T, || {
        Ok(node
            .container_log("default", "talk", "c", 0)
            .filter(|l| l.contains("out spdy listener")))
    })?;
    for line in [
        "stdout F out hello attach",
        "stderr F err hello attach",
        "stdout F out after detach",
    ] {
        assert!(log.contains(line), "{line}: {log}");
    }
    let containers = node.pod_containers("talk")?;
    assert!(
        containers.iter().all(|c| c.state == running()),
        "attaching and detaching left the containers running: {containers:?}"
    );

    // Refusals: the agent answers them itself, before asking the runtime.
    assert_eq!(
        api.refused(&format!("/attach/default/{pod}/nope?stdout=1"), ws)?
            .0,
        404
    );
    assert_eq!(api.refused("/attach/default/nope/c?stdout=1", spdy)?.0, 404);
    let no_stream = format!("/attach/default/{pod}/c");
    for (code, body) in [api.refused(&no_stream, ws)?, api.refused(&no_stream, spdy)?] {
        assert_eq!(code, 400, "{body}");
        assert!(
            body.contains("at least 1 of stdin, stdout, stderr"),
            "{body}"
        );
    }
    Ok(())
}

/// Listeners in a pod on the CNI network: 8080 echoes what it reads (`cat`), 8081 says the
/// pod's hostname (its name, in its own UTS namespace) and hangs up.
const LISTENER: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: fwd}\nspec:\n  \
    terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: busybox:1.35\n    \
    command: [sh, -c, 'nc -ll -p 8081 -e hostname & exec nc -ll -p 8080 -e cat']\n";

/// Deterministic bytes that are not text, so nothing on the way can treat them as lines.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn port_forward_reaches_listeners_inside_the_pod_network_namespace() -> Result<()> {
    let pki = Pki::new("e2e-user")?;
    let port = free_port()?;
    let node = node!(NodeOpts {
        extra_config: pki.server_config(port),
        ..Default::default()
    });
    let api = Kubelet::new(&node, &pki, port)?;
    node.write_manifest("fwd.yaml", LISTENER)?;
    let pod = format!("fwd-{NODE}");
    // Channels of the three forwards below: (data, error) for 8080, 8081 and 9 (no listener).
    const ECHO: u8 = 0;
    const ECHO_ERR: u8 = 1;
    const NAME: u8 = 2;
    const NAME_ERR: u8 = 3;
    const NONE_ERR: u8 = 5;
    let ws = |path: &str| api.websocket(path);

    // WebSocket, ports as kubectl may send them: repeated and comma-separated. The pod's
    // listeners start a moment after its container does: until both answer, a forward ends
    // with "connection refused" on their error channels, and is tried again.
    let path = format!("/portForward/default/{pod}?port=8080,8081&port=9");
    let (mut ch, mut got) = node.wait("a forward that reaches both listeners", T, || {
        let mut ch = match api.websocket(&path)? {
            Ok(ch) => ch,
            Err((404, _)) => return Ok(None),
            Err((code, body)) => bail!("{path}: {code} {body}"),
        };
        ch.send(ECHO, b"ping\n")?;
        let mut got = Received::default();
        ch.read_until(&mut got, "both listeners, or an error", |g| {
            let echo = g.payload(ECHO) == b"ping\n" || !g.payload(ECHO_ERR).is_empty();
            let name = g.payload(NAME).ends_with(b"\n") || !g.payload(NAME_ERR).is_empty();
            echo && name && !g.payload(NONE_ERR).is_empty()
        })?;
        if got.payload(ECHO_ERR).is_empty() && got.payload(NAME_ERR).is_empty() {
            Ok(Some((ch, got)))
        } else {
            eprintln!("not listening yet: {got:?}");
            ch.close();
            Ok(None)
        }
    })?;
    for (channel, want) in [8080, 8080, 8081, 8081, 9, 9].into_iter().enumerate() {
        let channel = u8::try_from(channel)?;
        assert_eq!(got.port(channel), Some(want), "channel {channel}: {got:?}");
    }
    assert_eq!(
        String::from_utf8_lossy(got.payload(NAME)),
        format!("{pod}\n"),
        "8081 answers from inside the pod"
    );
    let refused = String::from_utf8_lossy(got.payload(NONE_ERR)).into_owned();
    assert!(refused.contains("refused"), "port 9: {refused}");
    echo_bulk(&mut ch, &mut got, ECHO, ECHO_ERR)?;
    ch.close();

    // SPDY, as an API server forwards: no ports in the URL; per forward an (error, data) pair
    // of streams named by port and requestID, all three on one connection.
    let spdy = |path: &str| api.spdy(path, PORT_FORWARD_V1);
    let mut s = api.when_running(&node, &format!("/portForward/default/{pod}"), spdy)?;
    for (i, port) in ["8080", "8081", "9"].into_iter().enumerate() {
        let (request, data) = (i.to_string(), u8::try_from(2 * i)?);
        let headers = |kind| {
            [
                ("streamType", kind),
                ("port", port),
                ("requestID", &request),
            ]
        };
        s.open(data + 1, &headers("error"))?;
        s.open(data, &headers("data"))?;
    }
    s.wait_replies()?;
    s.send(ECHO, b"ping\n")?;
    let mut got = Received::default();
    s.read_until(&mut got, "the echo, the name and the refusal", |g| {
        g.bytes(ECHO) == b"ping\n"
            && g.bytes(NAME).ends_with(b"\n")
            && !g.bytes(NONE_ERR).is_empty()
    })?;
    assert_eq!(got.text(NAME), format!("{pod}\n"));
    assert!(got.text(NONE_ERR).contains("refused"), "{got:?}");
    assert!(
        got.bytes(ECHO_ERR).is_empty() && got.bytes(NAME_ERR).is_empty(),
        "{got:?}"
    );
    echo_bulk(&mut s, &mut got, ECHO, ECHO_ERR)?;
    s.close();

    // Refusals the agent answers itself.
    let (code, body) = api.refused(&format!("/portForward/default/{pod}"), ws)?;
    assert_eq!(code, 400, "WebSocket port-forward names its ports: {body}");
    let (code, body) = api.refused(&format!("/portForward/default/{pod}?port=0"), ws)?;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        api.refused("/portForward/default/nope?port=8080", ws)?.0,
        404
    );
    assert_eq!(api.refused("/portForward/default/nope", spdy)?.0, 404);
    assert_eq!(api.request("GET", "/portForward/default/nope")?.0, 404);
    Ok(())
}
