//! Two nodes as two threads, talking over real loopback TCP with the plain
//! framing (ruling D8), each storing its channel in two files before it
//! calls `handle_persisted`: a journal the entries are appended to (and
//! fsynced), and a snapshot replaced atomically (write to a temporary file,
//! fsync, rename, fsync the directory), after which the journal is emptied. The run makes payments, cuts the TCP connection in
//! the middle of a round, kills one node without any shutdown in the middle
//! of a payment, restarts it from its files, reconnects (R1.2), finishes the
//! payments and closes. The chain is a real Bitcoin Core node in regtest
//! when `BITCOIND_EXE` is set, the simulated chain otherwise: the anchor and
//! the close are accepted and mined there.
//!
//! Run with `cargo run --example node`.

#[path = "support/interpreter.rs"]
mod interpreter;
#[path = "../tests/common/regtest.rs"]
#[allow(dead_code)]
mod regtest;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::{Amount, Transaction};
use paychan::channel::{Channel, ChannelConfig, Event, Output};
use paychan::journal;
use paychan::sim::{funding_tx, secret};
use paychan::tx::{InMemorySigner, KeyRole, Signer};
use paychan::wire::frame::{encode_frame, write_frame, FrameDecoder};
use paychan::wire::{Authenticate, Message};
use paychan::{MilliSats, Preimage};

/// What the main thread asks a node to do.
enum Cmd {
    /// The wallet's funding transaction for the anchor, and its output.
    Anchor(Transaction, u32),
    Block(u32),
    AnchorDepth(Transaction, u32),
    Pay(u64, u8),
    Fulfill(u64, u8),
    Close,
    /// Shut the TCP connection (the peer sees it drop).
    CutLink,
    /// Stop at once: no shutdown, no flush, nothing.
    Crash,
}

/// What a node tells the main thread.
enum Report {
    /// The channel asks its wallet to fund the anchor.
    FundAnchor(Amount, bitcoin::ScriptBuf),
    Broadcast(Transaction),
    Event(Event),
}

/// A channel's store on disk: `NAME.snapshot` and `NAME.journal`, whose
/// entries are each a 4-byte big-endian length and the entry.
struct FileStore {
    snapshot: PathBuf,
    journal: PathBuf,
}

impl FileStore {
    fn new(dir: &Path, name: &str) -> Self {
        FileStore { snapshot: dir.join(format!("{name}.snapshot")), journal: dir.join(format!("{name}.journal")) }
    }

    /// Makes one write durable.
    fn write(&self, w: &journal::Write) {
        match w {
            journal::Write::Append { entry, .. } => {
                let mut f = OpenOptions::new().create(true).append(true).open(&self.journal).expect("the journal");
                let mut bytes = (entry.len() as u32).to_be_bytes().to_vec();
                bytes.extend_from_slice(entry);
                f.write_all(&bytes).expect("appended");
                f.sync_data().expect("fsynced");
            }
            journal::Write::Snapshot { state, .. } => {
                let tmp = self.snapshot.with_extension("tmp");
                let mut f = File::create(&tmp).expect("a temporary file");
                f.write_all(state).expect("written");
                f.sync_all().expect("fsynced");
                fs::rename(&tmp, &self.snapshot).expect("renamed");
                let dir = self.snapshot.parent().expect("a directory");
                File::open(dir).and_then(|d| d.sync_all()).expect("directory fsynced");
                // Every entry so far is in the snapshot. A crash before this
                // leaves them in the journal, and `restore` skips them.
                File::create(&self.journal).and_then(|f| f.sync_all()).expect("journal emptied");
            }
        }
    }

    /// The channel as stored. A last entry cut short by the crash is passed
    /// on as it is: `restore` drops it.
    fn restore(&self, signer: Arc<InMemorySigner>) -> Channel {
        let snapshot = fs::read(&self.snapshot).expect("the snapshot");
        let journal = fs::read(&self.journal).unwrap_or_default();
        let mut entries = Vec::new();
        let mut rest = journal.as_slice();
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().expect("four bytes")) as usize;
            let end = (4 + len).min(rest.len());
            entries.push(&rest[4..end]);
            rest = &rest[end..];
        }
        // A length cut short is a torn entry too: passed on, so that the
        // channel's next write is a snapshot, which empties the file.
        if !rest.is_empty() {
            entries.push(rest);
        }
        Channel::restore(&snapshot, entries, signer).expect("restores")
    }
}

struct Node {
    name: &'static str,
    ch: Channel,
    store: FileStore,
    stream: Option<TcpStream>,
    decoder: FrameDecoder,
    reports: Sender<Report>,
}

impl Node {
    fn drain(&mut self) {
        while let Some(out) = self.ch.poll_output() {
            match out {
                Output::Persist(w) => {
                    self.store.write(&w);
                    self.ch.handle_persisted(w.seq());
                }
                Output::Send { acknowledge, bytes: pkt, .. } => {
                    let mut bytes = Vec::new();
                    write_frame(acknowledge, &pkt, &mut bytes).expect("the channel's messages are bounded");
                    if let Some(s) = self.stream.as_mut() {
                        if s.write_all(&bytes).is_err() {
                            self.stream = None;
                        }
                    }
                }
                Output::FundAnchor { amount, script_pubkey } => {
                    let _ = self.reports.send(Report::FundAnchor(amount, script_pubkey));
                }
                Output::Broadcast(tx) => {
                    let _ = self.reports.send(Report::Broadcast(tx));
                }
                Output::Event(e) => {
                    let _ = self.reports.send(Report::Event(e));
                }
                _ => {}
            }
        }
    }

    /// A new transport: our `authenticate` first (R1.2-b).
    fn connected(&mut self, stream: TcpStream) {
        stream.set_read_timeout(Some(Duration::from_millis(5))).expect("a timeout");
        self.stream = Some(stream);
        self.decoder = FrameDecoder::new();
        let ack = self.ch.new_transport();
        let auth = Message::Authenticate(Box::new(Authenticate {
            node_id: pubkey(self.name),
            session_sig: bitcoin::secp256k1::ecdsa::Signature::from_compact(&[1; 64]).expect("a signature"),
        }));
        let mut bytes = Vec::new();
        encode_frame(ack, &auth, &mut bytes).expect("small");
        if let Some(s) = self.stream.as_mut() {
            let _ = s.write_all(&bytes);
        }
    }

    fn read(&mut self) {
        let Some(s) = self.stream.as_mut() else { return };
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => self.stream = None,
            Ok(n) => self.decoder.push(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => self.stream = None,
        }
        while let Ok(Some(frame)) = self.decoder.next_frame() {
            match frame.message {
                Message::Authenticate(_) => self.ch.handle_authenticate(frame.acknowledge),
                m => self.ch.handle_message(m, frame.acknowledge),
            }
        }
        self.drain();
    }
}

fn pubkey(name: &str) -> bitcoin::CompressedPublicKey {
    let n = if name == "A" { 1 } else { 3 };
    InMemorySigner::new(secret(n), secret(n + 1)).public_key(KeyRole::Commit)
}

fn signer(name: &str) -> Arc<InMemorySigner> {
    let n = if name == "A" { 1 } else { 3 };
    Arc::new(InMemorySigner::new(secret(n), secret(n + 1)))
}

/// One node's thread: A listens, B connects, each reconnects whenever the
/// link drops; `restore` starts from the file instead of afresh.
fn spawn(
    name: &'static str,
    dir: &Path,
    port: u16,
    restore: bool,
    cmds: Receiver<Cmd>,
    reports: Sender<Report>,
) -> JoinHandle<()> {
    let store = FileStore::new(dir, name);
    std::thread::spawn(move || {
        let config = ChannelConfig::default();
        let ch = if restore {
            store.restore(signer(name))
        } else if name == "A" {
            Channel::new_funder(config, signer(name), [0xa1; 32], Amount::from_sat(1_000_000)).expect("valid")
        } else {
            Channel::new_fundee(config, signer(name), [0xb2; 32]).expect("valid")
        };
        let mut node = Node { name, ch, store, stream: None, decoder: FrameDecoder::new(), reports };
        node.drain();
        let listener = (name == "A").then(|| {
            let l = TcpListener::bind(("127.0.0.1", port)).expect("the port");
            l.set_nonblocking(true).expect("non-blocking");
            l
        });
        loop {
            if node.stream.is_none() {
                let stream = match &listener {
                    Some(l) => l.accept().ok().map(|(s, _)| s),
                    None => TcpStream::connect(("127.0.0.1", port)).ok(),
                };
                if let Some(s) = stream {
                    s.set_nonblocking(false).expect("blocking with a timeout");
                    node.connected(s);
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            while let Ok(cmd) = cmds.try_recv() {
                match cmd {
                    Cmd::Anchor(tx, vout) => {
                        let _ = node.ch.provide_anchor(tx, vout);
                    }
                    Cmd::Block(h) => node.ch.handle_block(h, 1_600_000_000 + 600 * h),
                    Cmd::AnchorDepth(tx, d) => node.ch.handle_anchor_depth(&tx, d),
                    Cmd::Pay(msat, tag) => {
                        let expiry = LockTime::from_height(5_000).expect("a height");
                        let r = Preimage([tag; 32]);
                        if node.ch.offer_htlc(MilliSats::from_msat(msat), r.hash(), expiry, vec![]).is_ok() {
                            let _ = node.ch.commit();
                        }
                    }
                    Cmd::Fulfill(id, tag) => {
                        if node.ch.fulfill_htlc(id, Preimage([tag; 32])).is_ok() {
                            let _ = node.ch.commit();
                        }
                    }
                    Cmd::Close => {
                        let _ = node.ch.close();
                    }
                    Cmd::CutLink => {
                        if let Some(s) = node.stream.take() {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        }
                    }
                    Cmd::Crash => return,
                }
                node.drain();
            }
            // Commit whatever the peer staged, as an application would.
            if node.ch.can_commit() {
                let _ = node.ch.commit();
                node.drain();
            }
            node.read();
        }
    })
}

/// Waits until `f` holds on the reports, or panics after 20 s.
fn wait_for(reports: &Receiver<(char, Report)>, log: &mut Log, what: &str, mut f: impl FnMut(&Log) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f(log) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if let Ok((who, r)) = reports.recv_timeout(Duration::from_millis(50)) {
            log.take(who, r);
        }
    }
}

#[derive(Default)]
struct Log {
    fund: Option<(Amount, bitcoin::ScriptBuf)>,
    broadcasts: Vec<Transaction>,
    events: Vec<(char, Event)>,
}

impl Log {
    fn take(&mut self, who: char, r: Report) {
        match r {
            Report::FundAnchor(amount, script) => self.fund = Some((amount, script)),
            Report::Broadcast(tx) => self.broadcasts.push(tx),
            Report::Event(e) => self.events.push((who, e)),
        }
    }
    fn count(&self, who: char, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|(w, e)| *w == who && f(e)).count()
    }
}

/// Where the anchor and the close go.
enum Chain {
    Sim(paychan::sim::chain::SimChain),
    Regtest(regtest::Bitcoind, regtest::Wallet),
}

impl Chain {
    fn new() -> Chain {
        match regtest::Bitcoind::start("node") {
            Some(node) => {
                let wallet = regtest::Wallet::new(&node, 900, 2);
                Chain::Regtest(node, wallet)
            }
            None => {
                let mut chain = interpreter::verified_chain();
                chain.mine_empty(99);
                Chain::Sim(chain)
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Chain::Sim(_) => "the simulated chain (set BITCOIND_EXE for a regtest node)",
            Chain::Regtest(..) => "a Bitcoin Core regtest node",
        }
    }

    /// The wallet funds `amount` to `script`.
    fn fund(&mut self, amount: Amount, script: bitcoin::ScriptBuf) -> (Transaction, u32) {
        match self {
            Chain::Sim(_) => (funding_tx(script, amount), 0),
            Chain::Regtest(_, wallet) => wallet.pay(amount, script),
        }
    }

    /// Broadcasts and mines `tx` plus `more` blocks; returns the height.
    fn confirm(&mut self, tx: &Transaction, more: u32) -> u32 {
        match self {
            Chain::Sim(chain) => {
                if chain.submit(tx.clone()).is_err() {
                    // The stand-in anchor spends nothing the chain knows.
                    chain.adopt(tx.clone());
                } else {
                    chain.mine();
                }
                chain.mine_empty(more);
                chain.height()
            }
            Chain::Regtest(node, wallet) => {
                node.accept(tx).expect("the node accepts it");
                node.send(tx).expect("sent");
                node.mine(1 + more, &wallet.address);
                node.height()
            }
        }
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("paychan-node-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a directory");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a port");
    let (report_tx, reports) = channel::<(char, Report)>();
    let start = |name: &'static str, restore: bool| {
        let (tx, rx) = channel();
        let (rtx, rrx) = channel();
        let forward = report_tx.clone();
        let who = if name == "A" { 'A' } else { 'B' };
        std::thread::spawn(move || {
            while let Ok(r) = rrx.recv() {
                if forward.send((who, r)).is_err() {
                    return;
                }
            }
        });
        let handle = spawn(name, &dir, port, restore, rx, rtx);
        (tx, handle)
    };
    let mut log = Log::default();
    let (a, _ha) = start("A", false);
    let (mut b, mut hb) = start("B", false);
    println!("A and B run as two threads on 127.0.0.1:{port}, each storing its state in {}", dir.display());

    let mut chain = Chain::new();
    println!("the chain: {}", chain.name());

    // Establishment: the wallet funds the anchor, A broadcasts it, it is
    // buried, both send open_complete.
    wait_for(&reports, &mut log, "the anchor request", |l| l.fund.is_some());
    let (amount, script) = log.fund.clone().expect("asked");
    let (funding, vout) = chain.fund(amount, script);
    a.send(Cmd::Anchor(funding, vout)).unwrap();
    wait_for(&reports, &mut log, "the anchor", |l| !l.broadcasts.is_empty());
    let anchor = log.broadcasts[0].clone();
    let height = chain.confirm(&anchor, 5);
    for n in [&a, &b] {
        n.send(Cmd::Block(height)).unwrap();
        n.send(Cmd::AnchorDepth(anchor.clone(), 6)).unwrap();
    }
    wait_for(&reports, &mut log, "the channel to open", |l| {
        l.count('A', |e| matches!(e, Event::ChannelOpen { .. })) == 1
            && l.count('B', |e| matches!(e, Event::ChannelOpen { .. })) == 1
    });
    println!("channel open over TCP: anchor {}", anchor.compute_txid());

    // Payments from A to B; B fulfils each.
    let added = |l: &Log, n| l.count('B', |e| matches!(e, Event::HtlcAdded { .. })) >= n;
    let fulfilled = |l: &Log, n| l.count('A', |e| matches!(e, Event::HtlcFulfilled { .. })) >= n;
    for i in 0..3u64 {
        a.send(Cmd::Pay(10_000_000, i as u8 + 1)).unwrap();
        wait_for(&reports, &mut log, "the HTLC", |l| added(l, i as usize + 1));
        b.send(Cmd::Fulfill(i, i as u8 + 1)).unwrap();
        wait_for(&reports, &mut log, "the fulfill", |l| fulfilled(l, i as usize + 1));
    }
    println!("3 payments of 10,000 sat made");

    // Payment 4: the TCP connection is cut in the middle of the round.
    a.send(Cmd::Pay(10_000_000, 4)).unwrap();
    a.send(Cmd::CutLink).unwrap();
    wait_for(&reports, &mut log, "the HTLC after a reconnection", |l| added(l, 4));
    println!("payment 4: the TCP connection was cut mid-round; both sides reconnected and resent (R1.2)");
    b.send(Cmd::Fulfill(3, 4)).unwrap();
    wait_for(&reports, &mut log, "the fulfill", |l| fulfilled(l, 4));

    // Payment 5: B is killed while it processes the payment, and restarts
    // from its file.
    a.send(Cmd::Pay(10_000_000, 5)).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    b.send(Cmd::Crash).unwrap();
    hb.join().expect("B stopped");
    println!(
        "payment 5: B was killed mid-payment (no shutdown); restarting it from {} and its journal",
        dir.join("B.snapshot").display()
    );
    let (b2, hb2) = start("B", true);
    b = b2;
    hb = hb2;
    b.send(Cmd::Block(height + 1)).unwrap();
    wait_for(&reports, &mut log, "the HTLC after B's restart", |l| added(l, 5));
    b.send(Cmd::Fulfill(4, 5)).unwrap();
    wait_for(&reports, &mut log, "the fulfill", |l| fulfilled(l, 5));
    println!("B restarted, reconnected, and the payment completed");

    // The close.
    a.send(Cmd::Close).unwrap();
    wait_for(&reports, &mut log, "the close", |l| {
        l.count('A', |e| matches!(e, Event::ChannelClosed { .. })) == 1
            && l.count('B', |e| matches!(e, Event::ChannelClosed { .. })) == 1
    });
    let close = log.events.iter().find_map(|(_, e)| match e {
        Event::ChannelClosed { tx } => Some(tx.clone()),
        _ => None,
    });
    let close = close.expect("closed");
    let mined = chain.confirm(&close, 0);
    println!(
        "closed cooperatively: {} ({} outputs), mined at height {mined}",
        close.compute_txid(),
        close.output.len()
    );
    for o in &close.output {
        println!("  {}", o.value);
    }
    // B holds the five payments less its half of the close fee.
    let fee = Amount::from_sat(1_000_000) - close.output.iter().map(|o| o.value).sum::<Amount>();
    let b_gets = Amount::from_sat(50_000) - Amount::from_sat(fee.to_sat() / 2);
    assert!(close.output.iter().any(|o| o.value == b_gets), "B received the 5 payments");
    println!("B holds the 5 payments, 50,000 sat, less half the {fee} close fee");
    let _ = (a.send(Cmd::Crash), b.send(Cmd::Crash));
    let _ = hb.join();
    let _ = fs::remove_dir_all(&dir);
    drop(chain);
}
