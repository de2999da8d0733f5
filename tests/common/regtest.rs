//! A Bitcoin Core node in regtest for the end-to-end tests: started from
//! `BITCOIND_EXE` with a temporary data directory and free loopback ports,
//! driven over JSON-RPC on loopback, stopped by its pid when dropped (also
//! when a test fails). A wallet of the test's own spends its coinbases.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash as _;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Address, Amount, Block, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Txid, Witness,
};
use serde_json::{json, Value};

/// A running `bitcoind -regtest`.
pub struct Bitcoind {
    child: Child,
    dir: PathBuf,
    port: u16,
    auth: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Bitcoind {
    /// A fresh node, or `None` (with a note saying how to run the test)
    /// when `BITCOIND_EXE` is not set.
    pub fn start(test: &str) -> Option<Self> {
        let Ok(exe) = std::env::var("BITCOIND_EXE") else {
            eprintln!(
                "{test}: NOT RUN: set BITCOIND_EXE to a bitcoind binary to run the regtest suite \
                 (for example BITCOIND_EXE=../shared/tools/bitcoin-core/bitcoind cargo test --test regtest)"
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!("paychan-regtest-{test}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let port = free_port();
        let child = Command::new(exe)
            .arg("-regtest")
            .arg(format!("-datadir={}", dir.display()))
            .args(["-server", "-listen=0", "-connect=0", "-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1"])
            .arg(format!("-rpcport={port}"))
            .args(["-minrelaytxfee=0.00001", "-fallbackfee=0.0001", "-printtoconsole=0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bitcoind starts");
        let mut node = Bitcoind { child, dir, port, auth: String::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let cookie = node.dir.join("regtest").join(".cookie");
            if let Ok(c) = std::fs::read_to_string(&cookie) {
                node.auth = base64(c.trim().as_bytes());
                if node.rpc("getblockcount", json!([])).is_ok() {
                    return Some(node);
                }
            }
            assert!(Instant::now() < deadline, "bitcoind did not answer within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One JSON-RPC call: the result, or the node's error message.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params}).to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        let request = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.auth,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
        let json = response.split("\r\n\r\n").nth(1).ok_or("no body")?;
        let v: Value = serde_json::from_str(json).map_err(|e| format!("{e}: {json}"))?;
        match &v["error"] {
            Value::Null => Ok(v["result"].clone()),
            e => Err(e["message"].as_str().unwrap_or("error").to_string()),
        }
    }

    /// Mines `n` blocks to `address`.
    pub fn mine(&self, n: u32, address: &Address) {
        self.rpc("generatetoaddress", json!([n, address.to_string()])).expect("mined");
    }

    /// The tip's height.
    pub fn height(&self) -> u32 {
        self.rpc("getblockcount", json!([])).expect("a height").as_u64().expect("a number") as u32
    }

    /// The block at `height`.
    pub fn block(&self, height: u32) -> Block {
        let hash = self.rpc("getblockhash", json!([height])).expect("a hash");
        let hex = self.rpc("getblock", json!([hash, 0])).expect("a block");
        deserialize(&hex_decode(hex.as_str().expect("hex"))).expect("a block")
    }

    /// What `testmempoolaccept` says: `Ok` or the reject reason.
    pub fn accept(&self, tx: &Transaction) -> Result<(), String> {
        let r = self.rpc("testmempoolaccept", json!([[hex_encode(&serialize(tx))]]))?;
        if r[0]["allowed"].as_bool() == Some(true) {
            Ok(())
        } else {
            Err(r[0]["reject-reason"].as_str().unwrap_or("rejected").to_string())
        }
    }

    /// `sendrawtransaction`.
    pub fn send(&self, tx: &Transaction) -> Result<Txid, String> {
        self.rpc("sendrawtransaction", json!([hex_encode(&serialize(tx))])).map(|_| tx.compute_txid())
    }

    /// Whether `txid` is confirmed (in a block of the best chain).
    pub fn confirmations(&self, txid: &Txid) -> u32 {
        let height = self.height();
        for h in (1..=height).rev().take(300) {
            if self.block(h).txdata.iter().any(|t| t.compute_txid() == *txid) {
                return height - h + 1;
            }
        }
        0
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        let _ = self.rpc("stop", json!([]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// The test's wallet: one key, its coinbases and change.
pub struct Wallet {
    key: SecretKey,
    pub address: Address,
    utxos: Vec<(OutPoint, TxOut)>,
}

impl Wallet {
    /// A wallet whose key is `secret(n)`, with `coins` mature coinbases on
    /// `node` (it mines `coins + 100` blocks).
    pub fn new(node: &Bitcoind, n: u64, coins: u32) -> Self {
        let secp = Secp256k1::new();
        let key = super::secret(n);
        let public = CompressedPublicKey(key.public_key(&secp));
        let address = Address::p2wpkh(&public, Network::Regtest);
        let start = node.height();
        node.mine(coins + 100, &address);
        let mut utxos = Vec::new();
        for h in start + 1..=start + coins {
            let coinbase = node.block(h).txdata[0].clone();
            utxos.push((OutPoint { txid: coinbase.compute_txid(), vout: 0 }, coinbase.output[0].clone()));
        }
        Wallet { key, address, utxos }
    }

    /// A transaction paying `amount` to `script_pubkey` (output 0), change
    /// back to the wallet, 2 sat/vB: signed, not broadcast.
    pub fn pay(&mut self, amount: Amount, script_pubkey: ScriptBuf) -> (Transaction, u32) {
        let (outpoint, spent) = self.utxos.pop().expect("a coin left");
        let fee = Amount::from_sat(300);
        let change = spent.value - amount - fee;
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![
                TxOut { value: amount, script_pubkey },
                TxOut { value: change, script_pubkey: self.address.script_pubkey() },
            ],
        };
        let secp = Secp256k1::new();
        let public = CompressedPublicKey(self.key.public_key(&secp));
        let code = ScriptBuf::new_p2pkh(&public.pubkey_hash());
        let sighash =
            SighashCache::new(&tx).p2wsh_signature_hash(0, &code, spent.value, EcdsaSighashType::All).expect("input 0");
        let sig = secp.sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &self.key);
        let sig = bitcoin::ecdsa::Signature::sighash_all(sig);
        tx.input[0].witness = Witness::from_slice(&[sig.to_vec(), public.to_bytes().to_vec()]);
        let txid = tx.compute_txid();
        self.utxos.insert(0, (OutPoint { txid, vout: 1 }, tx.output[1].clone()));
        (tx, 0)
    }
}
