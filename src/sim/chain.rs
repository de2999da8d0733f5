//! A deterministic in-memory Bitcoin chain: blocks, a UTXO set, a mempool
//! and a miner, for testing the on-chain side of a channel (sweeps,
//! penalties, HTLC claims, fee bumps, reorgs) without a node.
//!
//! [`SimChain`] enforces the consensus and relay rules those transactions
//! depend on, so that a sweep broadcast before its delay is refused and the
//! same sweep is accepted once the delay has passed:
//!
//! - inputs exist and are unspent, none is spent twice, outputs do not exceed
//!   inputs, values stay within 21 million bitcoin;
//! - `nLockTime` finality (BIP 113: a time lock is compared with the time of
//!   the tip, which stands for its median time past);
//! - relative locks in `nSequence` for version 2 transactions (BIP 68);
//! - replace-by-fee for conflicts with the mempool (BIP 125, simplified);
//! - the scripts of every input, through a pluggable [`Verifier`]. The
//!   library has no script interpreter; the crate's tests plug in Bitcoin
//!   Core's (`bitcoinconsensus`), which also checks `OP_CHECKSEQUENCEVERIFY`
//!   and `OP_CHECKLOCKTIMEVERIFY`. Without a verifier, scripts are not checked.
//!
//! Everything is deterministic: block `n` has time `GENESIS_TIME + 600 * n`,
//! block hashes are digests of the chain's own history, and the mempool keeps
//! the order in which transactions arrived.
//!
//! ```
//! use bitcoin::{absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
//! use paychan::sim::{Reject, SimChain};
//!
//! let mut chain = SimChain::new();
//! let anyone = ScriptBuf::from_bytes(vec![0x51]); // OP_TRUE
//! let coin = chain.fund(Amount::from_sat(10_000), anyone.clone());
//!
//! // A spend that must wait 3 blocks after its input confirmed (BIP 68).
//! let sweep = Transaction {
//!     version: transaction::Version::TWO,
//!     lock_time: absolute::LockTime::ZERO,
//!     input: vec![TxIn {
//!         previous_output: OutPoint { txid: coin.compute_txid(), vout: 0 },
//!         script_sig: ScriptBuf::new(),
//!         sequence: Sequence::from_height(3),
//!         witness: Witness::new(),
//!     }],
//!     output: vec![TxOut { value: Amount::from_sat(9_000), script_pubkey: anyone }],
//! };
//! assert!(matches!(chain.submit(sweep.clone()), Err(Reject::RelativeLock { input: 0, .. })));
//! chain.mine_empty(2);
//! let block = chain.confirm(sweep.clone()).unwrap();
//! assert_eq!(block.txs, vec![sweep.clone()]);
//! assert_eq!(chain.confirmations(&sweep.compute_txid()), 1);
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use bitcoin::hashes::{sha256d, Hash as _};
use bitcoin::{
    absolute, transaction, Amount, BlockHash, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};

/// Checks the script of one input: `(transaction, input index, the output it
/// spends)`. `Err` carries the interpreter's reason.
///
/// The verdict must depend on its arguments only (as a script interpreter's
/// does): the chain checks each input once, when the transaction enters the
/// mempool, and keeps the verdict when it mines or re-admits the transaction
/// after a reorg.
pub type Verifier = Box<dyn Fn(&Transaction, usize, &TxOut) -> Result<(), String> + Send>;

/// The time of the genesis block; block `n` has time `GENESIS_TIME + 600 * n`
/// (the same clock as [`super::Pair::block`]).
pub const GENESIS_TIME: u32 = 1_600_000_000;

/// Seconds between two blocks.
pub const BLOCK_INTERVAL: u32 = 600;

/// Lock times from this value up are times, below it heights (BIP 65).
const LOCK_TIME_THRESHOLD: u32 = 500_000_000;

/// BIP 68: the bit of `nSequence` that disables the relative lock.
const SEQUENCE_DISABLE: u32 = 1 << 31;
/// BIP 68: the bit of `nSequence` that makes the relative lock a time.
const SEQUENCE_TYPE_TIME: u32 = 1 << 22;
/// BIP 68: the bits of `nSequence` that hold the lock's value.
const SEQUENCE_VALUE: u32 = 0xffff;
/// BIP 68: a time lock counts units of 512 seconds.
const SEQUENCE_GRANULARITY: u64 = 512;

/// One block of the simulated chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Its height; genesis is 0.
    pub height: u32,
    /// Its hash: a digest of its height, its parent, its transactions and
    /// how many blocks the chain had made before it, so that a block mined
    /// after a reorg never has the hash of the one it replaces.
    pub hash: BlockHash,
    /// The hash of its parent (all zeros for genesis).
    pub prev: BlockHash,
    /// Its time, standing for its median time past: `GENESIS_TIME + 600 *
    /// height`, strictly increasing.
    pub time: u32,
    /// Its transactions, each after those it spends.
    pub txs: Vec<Transaction>,
}

/// Why a transaction was refused, by [`SimChain::submit`] or
/// [`SimChain::confirm`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The transaction is already in the mempool or the chain. Rebroadcasts
    /// are expected; callers may ignore it.
    #[error("the transaction is already in the mempool or the chain")]
    AlreadyKnown,
    /// The transaction has no inputs.
    #[error("the transaction has no inputs")]
    NoInputs,
    /// The transaction has no outputs.
    #[error("the transaction has no outputs")]
    NoOutputs,
    /// The transaction spends the same output twice.
    #[error("the transaction spends {0} twice")]
    DuplicateInput(OutPoint),
    /// An output, the sum of the outputs or the sum of the inputs is above 21
    /// million bitcoin.
    #[error("a value or a sum of values is above 21 million bitcoin")]
    ValueRange,
    /// The lock time is not yet reached for the next block.
    #[error("lock time {lock_time} is not final for block {height} (tip time {time})")]
    NonFinal {
        /// The transaction's lock time.
        lock_time: absolute::LockTime,
        /// The height of the next block.
        height: u32,
        /// The time of the tip.
        time: u32,
    },
    /// An input spends an output that neither the chain nor the mempool has.
    #[error("input {0} spends an output that does not exist")]
    MissingInput(OutPoint),
    /// An input spends an output already spent in the chain.
    #[error("input {0} is already spent in the chain")]
    AlreadySpent(OutPoint),
    /// The outputs pay more than the inputs hold.
    #[error("outputs pay {output}, more than the inputs hold ({input})")]
    ValueOut {
        /// The sum of the inputs.
        input: Amount,
        /// The sum of the outputs.
        output: Amount,
    },
    /// An input's relative lock (BIP 68) is not yet reached for the next
    /// block, or its output is not yet confirmed and the lock is not zero.
    #[error("input {input}: relative lock {sequence:#x} is not reached")]
    RelativeLock {
        /// The input.
        input: usize,
        /// Its `nSequence`.
        sequence: Sequence,
    },
    /// The transaction conflicts with the mempool and may not replace what
    /// it conflicts with (BIP 125).
    #[error("replacement not allowed: {reason}")]
    ReplacementNotAllowed {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The verifier refused an input's script.
    #[error("input {input}: script refused: {reason}")]
    Script {
        /// The input.
        input: usize,
        /// The verifier's reason.
        reason: String,
    },
}

/// A confirmed unspent output and the height of the block that made it.
#[derive(Clone, Debug)]
struct Coin {
    txout: TxOut,
    height: u32,
}

/// A transaction waiting in the mempool.
#[derive(Clone, Debug)]
struct Entry {
    tx: Transaction,
    /// Arrival order; the mempool is kept in it, which is also an order in
    /// which every transaction comes after those it spends.
    seq: u64,
    fee: Amount,
    vsize: u64,
}

/// Where a transaction is checked for: the mempool (outputs of mempool
/// transactions may be spent, conflicts are collected) or the block being
/// mined (only outputs in the UTXO set, which already holds those of the
/// block's earlier transactions).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Mempool,
    Block,
}

/// What a successful check found.
struct Checked {
    fee: Amount,
    /// The outputs spent, one per input (empty for funding transactions).
    spent: Vec<TxOut>,
    /// Mempool transactions spending the same outputs, each once.
    conflicts: Vec<Txid>,
}

/// A deterministic in-memory chain with a mempool and a miner.
///
/// Methods fall in three kinds:
/// - getters: [`height`](Self::height), [`tip`](Self::tip),
///   [`block`](Self::block), [`time`](Self::time),
///   [`confirmations`](Self::confirmations), [`spender`](Self::spender),
///   [`utxo`](Self::utxo), [`mempool`](Self::mempool),
///   [`in_mempool`](Self::in_mempool);
/// - the network: [`submit`](Self::submit) a transaction to the mempool;
/// - the miners: [`mine`](Self::mine), [`mine_only`](Self::mine_only),
///   [`mine_empty`](Self::mine_empty), [`reorg`](Self::reorg), and the
///   shortcuts [`fund`](Self::fund) and [`confirm`](Self::confirm).
///
/// Every transaction in the mempool is valid for the next block, at every
/// moment: locks only loosen as the chain grows, and a reorg re-checks the
/// whole mempool.
pub struct SimChain {
    /// Block `n` at index `n`; never empty (genesis stays).
    blocks: Vec<Block>,
    /// Per block, the coins its transactions spent, to disconnect it.
    undo: Vec<Vec<(OutPoint, Coin)>>,
    utxos: HashMap<OutPoint, Coin>,
    /// Confirmed transactions: (block height, index in the block).
    confirmed: HashMap<Txid, (u32, usize)>,
    /// Confirmed spends: the (block height, index in the block) of the spender.
    spenders: HashMap<OutPoint, (u32, usize)>,
    mempool: HashMap<Txid, Entry>,
    /// The mempool in arrival order.
    order: BTreeMap<u64, Txid>,
    /// Which mempool transaction spends an output.
    mempool_spends: HashMap<OutPoint, Txid>,
    next_seq: u64,
    /// Transactions made by [`SimChain::fund`]: their inputs are outside the
    /// simulation and are not checked.
    external: HashSet<Txid>,
    funded: u64,
    /// Blocks made so far, genesis included; goes into block hashes.
    made: u64,
    verifier: Option<Verifier>,
}

impl fmt::Debug for SimChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimChain")
            .field("height", &self.height())
            .field("tip", &self.tip().hash)
            .field("mempool", &self.mempool.len())
            .field("verifier", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for SimChain {
    fn default() -> Self {
        Self::new()
    }
}

impl SimChain {
    /// A chain holding only its genesis block (height 0, no transactions),
    /// with no script checks.
    pub fn new() -> Self {
        let mut chain = SimChain {
            blocks: Vec::new(),
            undo: Vec::new(),
            utxos: HashMap::new(),
            confirmed: HashMap::new(),
            spenders: HashMap::new(),
            mempool: HashMap::new(),
            order: BTreeMap::new(),
            mempool_spends: HashMap::new(),
            next_seq: 0,
            external: HashSet::new(),
            funded: 0,
            made: 0,
            verifier: None,
        };
        chain.push_block(Vec::new(), Vec::new());
        chain
    }

    /// A chain that checks every input of every transaction it accepts with
    /// `verifier`.
    pub fn with_verifier(verifier: Verifier) -> Self {
        let mut chain = Self::new();
        chain.verifier = Some(verifier);
        chain
    }

    // Getters.

    /// The height of the tip.
    pub fn height(&self) -> u32 {
        self.tip().height
    }

    /// The tip.
    pub fn tip(&self) -> &Block {
        self.blocks.last().expect("genesis is never disconnected")
    }

    /// The block at `height`, if the chain is that long.
    pub fn block(&self, height: u32) -> Option<&Block> {
        self.blocks.get(height as usize)
    }

    /// The time of the tip: what time locks are compared with.
    pub fn time(&self) -> u32 {
        self.tip().time
    }

    /// How many blocks confirm `txid`: 1 in the tip, 0 if not in the chain.
    pub fn confirmations(&self, txid: &Txid) -> u32 {
        self.confirmed.get(txid).map_or(0, |&(height, _)| self.height() - height + 1)
    }

    /// The confirmed transaction that spends `outpoint`, if any.
    pub fn spender(&self, outpoint: &OutPoint) -> Option<&Transaction> {
        let &(height, index) = self.spenders.get(outpoint)?;
        self.block(height)?.txs.get(index)
    }

    /// The output at `outpoint` if it is confirmed and not spent in the chain
    /// (a mempool spend does not count).
    pub fn utxo(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        self.utxos.get(outpoint).map(|coin| &coin.txout)
    }

    /// The mempool, in arrival order (each transaction after those it
    /// spends).
    pub fn mempool(&self) -> impl Iterator<Item = &Transaction> + '_ {
        self.order.values().filter_map(|txid| self.mempool.get(txid)).map(|entry| &entry.tx)
    }

    /// Whether `txid` is in the mempool.
    pub fn in_mempool(&self, txid: &Txid) -> bool {
        self.mempool.contains_key(txid)
    }

    // The network.

    /// Offers `tx` to the mempool, for the next block (height `height() +
    /// 1`, time locks against [`time`](Self::time)).
    ///
    /// The checks, in order: already known; structure (inputs, outputs,
    /// value ranges, duplicate inputs); lock time; inputs exist in the chain
    /// or the mempool and are unspent in the chain; value; relative locks;
    /// replacement of conflicting mempool transactions; scripts. A
    /// transaction already in the mempool or the chain is refused with
    /// [`Reject::AlreadyKnown`] before anything else is computed.
    ///
    /// Replacement follows BIP 125, simplified: every mempool transaction
    /// `tx` conflicts with must signal replaceability itself (an input with
    /// `nSequence` below `0xfffffffe`; inherited signalling is not
    /// considered), `tx` must pay a higher fee rate than each of them, and
    /// its fee must be at least the fees of everything it evicts (the
    /// conflicts and their descendants) plus 1 sat/vB of its own virtual
    /// size (Bitcoin Core's incremental relay fee). It may not spend an
    /// output of a transaction it evicts. The evicted transactions leave the
    /// mempool.
    pub fn submit(&mut self, tx: Transaction) -> Result<Txid, Reject> {
        let txid = tx.compute_txid();
        if self.mempool.contains_key(&txid) || self.confirmed.contains_key(&txid) {
            return Err(Reject::AlreadyKnown);
        }
        let checked = self.check(&tx, txid, Mode::Mempool)?;
        let vsize = tx.vsize() as u64;
        let evicted = if checked.conflicts.is_empty() {
            Vec::new()
        } else {
            self.replacement(&tx, checked.fee, vsize, &checked.conflicts)?
        };
        if let Some(verifier) = &self.verifier {
            for (input, spent) in checked.spent.iter().enumerate() {
                verifier(&tx, input, spent).map_err(|reason| Reject::Script { input, reason })?;
            }
        }
        for id in evicted {
            self.remove_from_mempool(&id);
        }
        self.add_to_mempool(tx, txid, checked.fee, vsize);
        Ok(txid)
    }

    // The miners.

    /// A transaction from outside the simulation paying `value` to
    /// `script_pubkey` at output 0, confirmed at once in a new block of its
    /// own (the mempool is left waiting) and spendable in the next block.
    ///
    /// Its one input spends a unique made-up outpoint that the chain does not
    /// check, with a placeholder witness, so that it reads as a segwit
    /// wallet's transaction (as [`super::funding_tx`] does). If a reorg
    /// disconnects it, it goes back to the mempool like any transaction.
    /// A value above 21 million bitcoin is recorded as given, and spending
    /// it is refused with [`Reject::ValueRange`].
    pub fn fund(&mut self, value: Amount, script_pubkey: ScriptBuf) -> Transaction {
        self.funded += 1;
        let mut seed = b"paychan sim fund".to_vec();
        seed.extend_from_slice(&self.funded.to_le_bytes());
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array(sha256d::Hash::hash(&seed).to_byte_array()),
                    vout: 0,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&[vec![0x30; 71], vec![0x02; 33]]),
            }],
            output: vec![TxOut { value, script_pubkey }],
        };
        self.adopt(tx.clone());
        tx
    }

    /// Confirms `tx`, a transaction from outside the simulation (a wallet's
    /// funding of a channel anchor), in a new block of its own, without
    /// checking its inputs; the mempool is left waiting. Returns the block.
    pub fn adopt(&mut self, tx: Transaction) -> Block {
        let txid = tx.compute_txid();
        self.external.insert(txid);
        let height = self.height() + 1;
        let mut undo = Vec::new();
        self.connect_tx(&tx, txid, height, 0, &mut undo);
        self.push_block(vec![tx], undo)
    }

    /// Drops `txid` and its descendants from the mempool, as a node that saw
    /// a conflicting transaction first would; returns what was dropped.
    pub fn evict(&mut self, txid: &Txid) -> Vec<Transaction> {
        let gone = self.with_descendants(&[*txid]);
        gone.iter().filter_map(|t| self.remove_from_mempool(t)).map(|e| e.tx).collect()
    }

    /// Submits `tx` (unless it is already in the mempool) and mines the next
    /// block with [`mine`](Self::mine): the block holds `tx` and everything
    /// else in the mempool.
    pub fn confirm(&mut self, tx: Transaction) -> Result<Block, Reject> {
        if !self.mempool.contains_key(&tx.compute_txid()) {
            self.submit(tx)?;
        }
        Ok(self.mine())
    }

    /// Mines the next block with every mempool transaction, in arrival
    /// order. The chain-dependent rules (locks, inputs) are checked again;
    /// a transaction that fails them stays in the mempool.
    pub fn mine(&mut self) -> Block {
        self.mine_only(|_| true)
    }

    /// Mines the next block with the mempool transactions `pick` accepts (it
    /// is asked once for each, in arrival order), leaving the others in the
    /// mempool: a miner that delays some transactions. A picked transaction
    /// that spends an output of one left out stays too.
    pub fn mine_only(&mut self, mut pick: impl FnMut(&Transaction) -> bool) -> Block {
        let height = self.height() + 1;
        let picked: Vec<Txid> = self
            .order
            .values()
            .filter(|txid| self.mempool.get(*txid).is_some_and(|entry| pick(&entry.tx)))
            .copied()
            .collect();
        let mut txs = Vec::new();
        let mut undo = Vec::new();
        for txid in picked {
            let Some(entry) = self.mempool.get(&txid) else { continue };
            if self.check(&entry.tx, txid, Mode::Block).is_err() {
                continue;
            }
            let Some(entry) = self.remove_from_mempool(&txid) else { continue };
            self.connect_tx(&entry.tx, txid, height, txs.len(), &mut undo);
            txs.push(entry.tx);
        }
        self.push_block(txs, undo)
    }

    /// Mines `n` empty blocks; returns them, lowest first.
    pub fn mine_empty(&mut self, n: u32) -> Vec<Block> {
        (0..n).map(|_| self.mine_only(|_| false)).collect()
    }

    /// Disconnects the top `depth` blocks (at most down to genesis, which
    /// stays) and returns them, tip first.
    ///
    /// Their transactions go back to the mempool, before those already
    /// there, and the whole mempool is checked again for the new next block
    /// (as Bitcoin Core does after a reorg): a transaction that is no longer
    /// valid (a lock no longer reached, a relative lock on an output that is
    /// now unconfirmed) is dropped, and so are its descendants.
    pub fn reorg(&mut self, depth: u32) -> Vec<Block> {
        let depth = depth.min(self.height());
        let mut disconnected = Vec::with_capacity(depth as usize);
        for _ in 0..depth {
            let block = self.blocks.pop().expect("depth is at most the height, so a block above genesis is left");
            let undo = self.undo.pop().expect("every block has its undo data");
            for tx in block.txs.iter().rev() {
                let txid = tx.compute_txid();
                for vout in 0..tx.output.len() as u32 {
                    self.utxos.remove(&OutPoint { txid, vout });
                }
                for input in &tx.input {
                    self.spenders.remove(&input.previous_output);
                }
                self.confirmed.remove(&txid);
            }
            self.utxos.extend(undo);
            disconnected.push(block);
        }

        let mut pending: Vec<Transaction> =
            disconnected.iter().rev().flat_map(|block| block.txs.iter().cloned()).collect();
        let waiting: Vec<Txid> = self.order.values().copied().collect();
        pending.extend(waiting.iter().filter_map(|txid| self.mempool.remove(txid)).map(|entry| entry.tx));
        self.mempool.clear();
        self.order.clear();
        self.mempool_spends.clear();
        for tx in pending {
            let txid = tx.compute_txid();
            // Scripts keep the verdict they had (see `Verifier`); what depends
            // on the chain is checked again.
            match self.check(&tx, txid, Mode::Mempool) {
                Ok(checked) if checked.conflicts.is_empty() => {
                    let vsize = tx.vsize() as u64;
                    self.add_to_mempool(tx, txid, checked.fee, vsize);
                }
                _ => {}
            }
        }
        disconnected
    }

    // Internals.

    /// The time of the block at `height`, or of the tip if the chain is not
    /// that long.
    fn time_at(&self, height: u32) -> u32 {
        self.block(height).map_or(self.time(), |block| block.time)
    }

    /// Checks `tx` for the next block, without scripts.
    fn check(&self, tx: &Transaction, txid: Txid, mode: Mode) -> Result<Checked, Reject> {
        if tx.input.is_empty() {
            return Err(Reject::NoInputs);
        }
        if tx.output.is_empty() {
            return Err(Reject::NoOutputs);
        }
        let output = sum_money(tx.output.iter().map(|o| o.value))?;
        let mut seen = HashSet::with_capacity(tx.input.len());
        if let Some(input) = tx.input.iter().find(|i| !seen.insert(i.previous_output)) {
            return Err(Reject::DuplicateInput(input.previous_output));
        }

        let next = self.height() + 1;
        let tip_time = self.time();
        if !is_final(tx, next, tip_time) {
            return Err(Reject::NonFinal { lock_time: tx.lock_time, height: next, time: tip_time });
        }
        if self.external.contains(&txid) {
            return Ok(Checked { fee: Amount::ZERO, spent: Vec::new(), conflicts: Vec::new() });
        }

        // Each input's output and the height it counts as confirmed at: an
        // output of a mempool transaction counts as confirmed in the next
        // block (as in Bitcoin Core).
        let mut spent = Vec::with_capacity(tx.input.len());
        let mut heights = Vec::with_capacity(tx.input.len());
        let mut conflicts = Vec::new();
        for input in &tx.input {
            let outpoint = &input.previous_output;
            let (txout, height) = if let Some(coin) = self.utxos.get(outpoint) {
                (&coin.txout, coin.height)
            } else if let Some(txout) = self.mempool_output(outpoint).filter(|_| mode == Mode::Mempool) {
                (txout, next)
            } else if self.spenders.contains_key(outpoint) {
                return Err(Reject::AlreadySpent(*outpoint));
            } else {
                return Err(Reject::MissingInput(*outpoint));
            };
            if mode == Mode::Mempool {
                if let Some(other) = self.mempool_spends.get(outpoint) {
                    if !conflicts.contains(other) {
                        conflicts.push(*other);
                    }
                }
            }
            spent.push(txout.clone());
            heights.push(height);
        }

        let input = sum_money(spent.iter().map(|o| o.value))?;
        let fee = input.checked_sub(output).ok_or(Reject::ValueOut { input, output })?;

        if tx.version.0 >= 2 {
            for (index, (txin, &height)) in tx.input.iter().zip(&heights).enumerate() {
                if !self.relative_lock_reached(txin.sequence, height, next, tip_time) {
                    return Err(Reject::RelativeLock { input: index, sequence: txin.sequence });
                }
            }
        }
        Ok(Checked { fee, spent, conflicts })
    }

    /// BIP 68 for one input whose output confirmed at `height`, for block
    /// `next` on a tip of time `tip_time`.
    ///
    /// A time lock counts from the time of the block before the output's
    /// (Bitcoin Core: the median time past of that block's parent) and is
    /// reached when that time plus `value * 512` is at most the tip's. The
    /// times are this chain's block times, which stand for median times past.
    fn relative_lock_reached(&self, sequence: Sequence, height: u32, next: u32, tip_time: u32) -> bool {
        let n = sequence.to_consensus_u32();
        if n & SEQUENCE_DISABLE != 0 {
            return true;
        }
        let value = u64::from(n & SEQUENCE_VALUE);
        if n & SEQUENCE_TYPE_TIME != 0 {
            let since = u64::from(self.time_at(height.saturating_sub(1)));
            since + value * SEQUENCE_GRANULARITY <= u64::from(tip_time)
        } else {
            u64::from(height) + value <= u64::from(next)
        }
    }

    /// The output at `outpoint` of a mempool transaction.
    fn mempool_output(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        self.mempool.get(&outpoint.txid)?.tx.output.get(outpoint.vout as usize)
    }

    /// Whether `tx` (fee `fee`, size `vsize`) may replace `conflicts`; if so,
    /// everything it evicts, conflicts first.
    fn replacement(&self, tx: &Transaction, fee: Amount, vsize: u64, conflicts: &[Txid]) -> Result<Vec<Txid>, Reject> {
        let refuse = |reason| Err(Reject::ReplacementNotAllowed { reason });
        for txid in conflicts {
            let Some(entry) = self.mempool.get(txid) else { continue };
            if !entry.tx.input.iter().any(|i| i.sequence.is_rbf()) {
                return refuse("a conflicting transaction does not signal replaceability");
            }
            // fee / vsize > entry.fee / entry.vsize, without division.
            if u128::from(fee.to_sat()) * u128::from(entry.vsize) <= u128::from(entry.fee.to_sat()) * u128::from(vsize)
            {
                return refuse("the fee rate is not higher than a conflicting transaction's");
            }
        }
        let evicted = self.with_descendants(conflicts);
        if tx.input.iter().any(|i| evicted.contains(&i.previous_output.txid)) {
            return refuse("it spends an output of a transaction it would replace");
        }
        let replaced: u64 =
            evicted.iter().filter_map(|txid| self.mempool.get(txid)).map(|entry| entry.fee.to_sat()).sum();
        if u128::from(fee.to_sat()) < u128::from(replaced) + u128::from(vsize) {
            return refuse("the fee does not pay for the replaced transactions plus 1 sat/vB of its own size");
        }
        Ok(evicted)
    }

    /// `txids` and every mempool transaction that spends from them,
    /// transitively, each once.
    fn with_descendants(&self, txids: &[Txid]) -> Vec<Txid> {
        let mut all: Vec<Txid> = Vec::new();
        let mut stack: Vec<Txid> = txids.iter().rev().copied().collect();
        while let Some(txid) = stack.pop() {
            if all.contains(&txid) {
                continue;
            }
            all.push(txid);
            if let Some(entry) = self.mempool.get(&txid) {
                for vout in 0..entry.tx.output.len() as u32 {
                    if let Some(child) = self.mempool_spends.get(&OutPoint { txid, vout }) {
                        stack.push(*child);
                    }
                }
            }
        }
        all
    }

    fn add_to_mempool(&mut self, tx: Transaction, txid: Txid, fee: Amount, vsize: u64) {
        for input in &tx.input {
            self.mempool_spends.insert(input.previous_output, txid);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, txid);
        self.mempool.insert(txid, Entry { tx, seq, fee, vsize });
    }

    fn remove_from_mempool(&mut self, txid: &Txid) -> Option<Entry> {
        let entry = self.mempool.remove(txid)?;
        self.order.remove(&entry.seq);
        for input in &entry.tx.input {
            if self.mempool_spends.get(&input.previous_output) == Some(txid) {
                self.mempool_spends.remove(&input.previous_output);
            }
        }
        Some(entry)
    }

    /// Applies `tx` as transaction `index` of the block at `height`.
    fn connect_tx(
        &mut self,
        tx: &Transaction,
        txid: Txid,
        height: u32,
        index: usize,
        undo: &mut Vec<(OutPoint, Coin)>,
    ) {
        for input in &tx.input {
            // The made-up inputs of funding transactions are not coins.
            if let Some(coin) = self.utxos.remove(&input.previous_output) {
                undo.push((input.previous_output, coin));
                self.spenders.insert(input.previous_output, (height, index));
            }
        }
        for (vout, txout) in tx.output.iter().enumerate() {
            self.utxos.insert(OutPoint { txid, vout: vout as u32 }, Coin { txout: txout.clone(), height });
        }
        self.confirmed.insert(txid, (height, index));
    }

    /// Appends the block holding `txs` (already connected) and returns it.
    fn push_block(&mut self, txs: Vec<Transaction>, undo: Vec<(OutPoint, Coin)>) -> Block {
        let (height, prev) = match self.blocks.last() {
            Some(tip) => (tip.height + 1, tip.hash),
            None => (0, BlockHash::all_zeros()),
        };
        let mut data = Vec::with_capacity(48 + 32 * txs.len());
        data.extend_from_slice(b"paychan sim block");
        data.extend_from_slice(&self.made.to_le_bytes());
        data.extend_from_slice(&height.to_le_bytes());
        data.extend_from_slice(prev.as_byte_array());
        for tx in &txs {
            data.extend_from_slice(tx.compute_txid().as_byte_array());
        }
        self.made += 1;
        let block = Block {
            height,
            hash: BlockHash::from_byte_array(sha256d::Hash::hash(&data).to_byte_array()),
            prev,
            time: GENESIS_TIME.saturating_add(BLOCK_INTERVAL.saturating_mul(height)),
            txs,
        };
        self.blocks.push(block.clone());
        self.undo.push(undo);
        block
    }
}

/// The sum of `values`, if it and each of them are at most 21 million bitcoin.
fn sum_money(mut values: impl Iterator<Item = Amount>) -> Result<Amount, Reject> {
    values
        .try_fold(Amount::ZERO, |sum, value| sum.checked_add(value).filter(|s| *s <= Amount::MAX_MONEY))
        .ok_or(Reject::ValueRange)
}

/// Whether `tx`'s lock time lets it into block `height` on a tip of time
/// `tip_time` (Bitcoin Core's `IsFinalTx` with BIP 113).
fn is_final(tx: &Transaction, height: u32, tip_time: u32) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 {
        return true;
    }
    let reached = if lock < LOCK_TIME_THRESHOLD { lock < height } else { lock < tip_time };
    reached || tx.input.iter().all(|i| i.sequence == Sequence::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    use bitcoin::absolute::LockTime;

    /// OP_TRUE: any witness spends it (no verifier in these tests, or one
    /// that looks at the witness only).
    fn anyone() -> ScriptBuf {
        ScriptBuf::from_bytes(vec![0x51])
    }

    fn sat(n: u64) -> Amount {
        Amount::from_sat(n)
    }

    fn op(tx: &Transaction, vout: u32) -> OutPoint {
        OutPoint { txid: tx.compute_txid(), vout }
    }

    /// A version 2 transaction spending `inputs` with their sequences, paying
    /// `outputs` to [`anyone`].
    fn spend(inputs: &[(OutPoint, Sequence)], outputs: &[u64]) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|&(previous_output, sequence)| TxIn {
                    previous_output,
                    script_sig: ScriptBuf::new(),
                    sequence,
                    witness: Witness::from_slice(&[vec![1u8]]),
                })
                .collect(),
            output: outputs.iter().map(|&v| TxOut { value: sat(v), script_pubkey: anyone() }).collect(),
        }
    }

    /// Spends output 0 of `parent` with a final sequence to one output of `value`.
    fn simple(parent: &Transaction, value: u64) -> Transaction {
        spend(&[(op(parent, 0), Sequence::MAX)], &[value])
    }

    /// Spends output 0 of `parent`, signalling replaceability.
    fn rbf(parent: &Transaction, value: u64) -> Transaction {
        spend(&[(op(parent, 0), Sequence::ENABLE_RBF_NO_LOCKTIME)], &[value])
    }

    fn mempool_ids(chain: &SimChain) -> Vec<Txid> {
        chain.mempool().map(|tx| tx.compute_txid()).collect()
    }

    #[test]
    fn genesis_is_deterministic() {
        let a = SimChain::new();
        let b = SimChain::default();
        assert_eq!(a.height(), 0);
        assert_eq!(a.tip(), b.tip());
        assert!(a.tip().txs.is_empty());
        assert_eq!(a.tip().prev, BlockHash::all_zeros());
        assert_eq!(a.time(), GENESIS_TIME);
        assert!(a.block(1).is_none());
    }

    #[test]
    fn fund_confirms_at_once_and_is_spendable() {
        let mut chain = SimChain::new();
        let f1 = chain.fund(sat(50_000), anyone());
        let f2 = chain.fund(sat(50_000), anyone());
        assert_ne!(f1.compute_txid(), f2.compute_txid());
        assert_eq!(chain.height(), 2);
        assert_eq!(chain.block(1).unwrap().txs, vec![f1.clone()]);
        assert_eq!(chain.tip().prev, chain.block(1).unwrap().hash);
        assert_eq!(chain.time(), GENESIS_TIME + 2 * BLOCK_INTERVAL);
        assert_eq!(chain.confirmations(&f1.compute_txid()), 2);
        assert_eq!(chain.confirmations(&f2.compute_txid()), 1);
        assert_eq!(chain.utxo(&op(&f1, 0)).unwrap().value, sat(50_000));
        assert!(f1.input.iter().all(|i| !i.witness.is_empty()));

        let tx = simple(&f1, 49_000);
        chain.confirm(tx.clone()).unwrap();
        assert_eq!(chain.spender(&op(&f1, 0)), Some(&tx));
        assert!(chain.utxo(&op(&f1, 0)).is_none());
        assert_eq!(chain.utxo(&op(&tx, 0)).unwrap().value, sat(49_000));
    }

    #[test]
    fn fund_leaves_the_mempool_waiting() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let tx = simple(&f, 49_000);
        chain.submit(tx.clone()).unwrap();
        chain.fund(sat(1), anyone());
        assert!(chain.in_mempool(&tx.compute_txid()));
    }

    #[test]
    fn submit_then_mine() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let tx = simple(&f, 49_000);
        let txid = chain.submit(tx.clone()).unwrap();
        assert!(chain.in_mempool(&txid));
        assert_eq!(chain.confirmations(&txid), 0);
        // A mempool spend leaves the output in the UTXO set.
        assert!(chain.utxo(&op(&f, 0)).is_some());
        assert!(chain.spender(&op(&f, 0)).is_none());

        let block = chain.mine();
        assert_eq!(block.txs, vec![tx]);
        assert_eq!(block.height, 2);
        assert!(!chain.in_mempool(&txid));
        assert_eq!(chain.mempool().count(), 0);
        assert_eq!(chain.confirmations(&txid), 1);
        chain.mine_empty(2);
        assert_eq!(chain.confirmations(&txid), 3);
    }

    #[test]
    fn already_known_in_mempool_and_chain() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let tx = simple(&f, 49_000);
        chain.submit(tx.clone()).unwrap();
        assert_eq!(chain.submit(tx.clone()), Err(Reject::AlreadyKnown));
        // confirm accepts a transaction already in the mempool.
        chain.confirm(tx.clone()).unwrap();
        assert_eq!(chain.submit(tx.clone()), Err(Reject::AlreadyKnown));
        assert_eq!(chain.confirm(tx), Err(Reject::AlreadyKnown));
        assert_eq!(chain.submit(f), Err(Reject::AlreadyKnown));
    }

    #[test]
    fn structure_rules() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());

        let mut no_inputs = simple(&f, 1);
        no_inputs.input.clear();
        assert_eq!(chain.submit(no_inputs), Err(Reject::NoInputs));

        let mut no_outputs = simple(&f, 1);
        no_outputs.output.clear();
        assert_eq!(chain.submit(no_outputs), Err(Reject::NoOutputs));

        let twice = spend(&[(op(&f, 0), Sequence::MAX), (op(&f, 0), Sequence::MAX)], &[1]);
        assert_eq!(chain.submit(twice), Err(Reject::DuplicateInput(op(&f, 0))));

        let too_much = simple(&f, 50_001);
        assert_eq!(chain.submit(too_much), Err(Reject::ValueOut { input: sat(50_000), output: sat(50_001) }));

        let mut huge = simple(&f, 1);
        huge.output[0].value = Amount::MAX_MONEY + sat(1);
        assert_eq!(chain.submit(huge), Err(Reject::ValueRange));
        let half = Amount::MAX_MONEY.to_sat() / 2 + 1;
        assert_eq!(chain.submit(spend(&[(op(&f, 0), Sequence::MAX)], &[half, half])), Err(Reject::ValueRange));

        // A funded value out of range cannot be spent.
        let big = chain.fund(Amount::MAX_MONEY + sat(1), anyone());
        assert_eq!(chain.submit(simple(&big, 1)), Err(Reject::ValueRange));

        // Exactly the inputs, no fee, is valid.
        chain.submit(simple(&f, 50_000)).unwrap();
    }

    #[test]
    fn missing_and_spent_inputs() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let nowhere = OutPoint { txid: Txid::from_byte_array([7; 32]), vout: 0 };
        assert_eq!(chain.submit(spend(&[(nowhere, Sequence::MAX)], &[1])), Err(Reject::MissingInput(nowhere)));
        chain.submit(simple(&f, 1)).unwrap();
        let missing_vout = OutPoint { txid: f.compute_txid(), vout: 1 };
        assert_eq!(
            chain.submit(spend(&[(missing_vout, Sequence::MAX)], &[1])),
            Err(Reject::MissingInput(missing_vout))
        );
        chain.mine();
        // Spent in the chain: a different spend is refused.
        assert_eq!(chain.submit(simple(&f, 2)), Err(Reject::AlreadySpent(op(&f, 0))));
        // Nobody may spend the made-up input of a funding transaction.
        let fake = f.input[0].previous_output;
        assert_eq!(chain.submit(spend(&[(fake, Sequence::MAX)], &[1])), Err(Reject::MissingInput(fake)));
    }

    #[test]
    fn absolute_height_lock() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let mut tx = spend(&[(op(&f, 0), Sequence::ENABLE_LOCKTIME_NO_RBF)], &[49_000]);
        tx.lock_time = LockTime::from_height(5).unwrap();
        // Tip 1: the next block is 2; the lock needs a block above 5.
        for _ in 0..4 {
            assert_eq!(
                chain.submit(tx.clone()),
                Err(Reject::NonFinal { lock_time: tx.lock_time, height: chain.height() + 1, time: chain.time() })
            );
            chain.mine();
        }
        assert_eq!(chain.height(), 5);
        chain.submit(tx.clone()).unwrap();
        assert_eq!(chain.mine().txs, vec![tx]);
    }

    #[test]
    fn final_sequences_ignore_the_lock_time() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let mut tx = simple(&f, 49_000);
        tx.lock_time = LockTime::from_height(1_000).unwrap();
        chain.submit(tx).unwrap();
    }

    #[test]
    fn absolute_time_lock() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let mut tx = spend(&[(op(&f, 0), Sequence::ZERO)], &[49_000]);
        // Final once the tip's time is above the lock.
        tx.lock_time = LockTime::from_time(chain.time()).unwrap();
        assert!(matches!(chain.submit(tx.clone()), Err(Reject::NonFinal { .. })));
        chain.mine();
        chain.submit(tx).unwrap();
    }

    #[test]
    fn relative_height_lock_refused_before_and_accepted_at_depth() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let tx = spend(&[(op(&f, 0), Sequence::from_height(3))], &[49_000]);
        let refused = Err(Reject::RelativeLock { input: 0, sequence: Sequence::from_height(3) });
        // The input has 1, then 2 confirmations: the spend may enter the
        // block that gives it 3 + 1, i.e. once it has 3.
        assert_eq!(chain.confirmations(&f.compute_txid()), 1);
        assert_eq!(chain.submit(tx.clone()), refused);
        chain.mine();
        assert_eq!(chain.submit(tx.clone()), refused);
        chain.mine();
        assert_eq!(chain.confirmations(&f.compute_txid()), 3);
        let block = chain.confirm(tx.clone()).unwrap();
        assert_eq!(block.height, 1 + 3);
        assert_eq!(chain.spender(&op(&f, 0)), Some(&tx));
    }

    #[test]
    fn relative_locks_need_version_2_and_no_disable_flag() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let g = chain.fund(sat(50_000), anyone());
        let mut v1 = spend(&[(op(&f, 0), Sequence::from_height(100))], &[49_000]);
        v1.version = transaction::Version::ONE;
        chain.submit(v1).unwrap();
        let disabled = spend(&[(op(&g, 0), Sequence(SEQUENCE_DISABLE | 100))], &[49_000]);
        chain.submit(disabled).unwrap();
    }

    #[test]
    fn relative_time_lock() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        // 2 * 512 s from the time of the block before the input's: one more
        // block (1200 s) reaches it.
        let sequence = Sequence::from_512_second_intervals(2);
        let tx = spend(&[(op(&f, 0), sequence)], &[49_000]);
        assert_eq!(chain.submit(tx.clone()), Err(Reject::RelativeLock { input: 0, sequence }));
        chain.mine();
        chain.submit(tx).unwrap();
    }

    #[test]
    fn relative_lock_on_an_unconfirmed_parent() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let parent = simple(&f, 49_000);
        chain.submit(parent.clone()).unwrap();
        let locked = spend(&[(op(&parent, 0), Sequence::from_height(1))], &[48_000]);
        assert!(matches!(chain.submit(locked.clone()), Err(Reject::RelativeLock { input: 0, .. })));
        let locked_time = spend(&[(op(&parent, 0), Sequence::from_512_second_intervals(1))], &[48_000]);
        assert!(matches!(chain.submit(locked_time), Err(Reject::RelativeLock { input: 0, .. })));
        // A zero relative lock is fine: both go in the same block.
        let child = spend(&[(op(&parent, 0), Sequence::ZERO)], &[48_000]);
        chain.submit(child.clone()).unwrap();
        assert_eq!(chain.mine().txs, vec![parent.clone(), child]);
        // The parent's output is now spent in the chain.
        assert_eq!(chain.submit(locked), Err(Reject::AlreadySpent(op(&parent, 0))));
    }

    #[test]
    fn mine_orders_parents_first() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let g = chain.fund(sat(50_000), anyone());
        let parent = simple(&f, 49_000);
        let child = simple(&parent, 48_000);
        let other = simple(&g, 49_000);
        chain.submit(parent.clone()).unwrap();
        chain.submit(other.clone()).unwrap();
        chain.submit(child.clone()).unwrap();
        assert_eq!(mempool_ids(&chain), vec![parent.compute_txid(), other.compute_txid(), child.compute_txid()]);
        let block = chain.mine();
        assert_eq!(block.txs, vec![parent.clone(), other, child.clone()]);
        assert_eq!(chain.spender(&op(&parent, 0)), Some(&child));
        assert_eq!(chain.confirmations(&child.compute_txid()), 1);
    }

    #[test]
    fn mine_only_delays_the_rest() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let g = chain.fund(sat(50_000), anyone());
        let parent = simple(&f, 49_000);
        let child = simple(&parent, 48_000);
        let other = simple(&g, 49_000);
        for tx in [&parent, &child, &other] {
            chain.submit(tx.clone()).unwrap();
        }
        let parent_id = parent.compute_txid();
        let mut asked = 0;
        // The child is picked but its parent is not: both wait.
        let block = chain.mine_only(|tx| {
            asked += 1;
            tx.compute_txid() != parent_id
        });
        assert_eq!(asked, 3);
        assert_eq!(block.txs, vec![other]);
        assert_eq!(mempool_ids(&chain), vec![parent_id, child.compute_txid()]);
        let block = chain.mine();
        assert_eq!(block.txs, vec![parent, child]);
    }

    #[test]
    fn mine_empty_makes_distinct_blocks() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        chain.submit(simple(&f, 49_000)).unwrap();
        let blocks = chain.mine_empty(3);
        assert_eq!(blocks.iter().map(|b| b.height).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(blocks.iter().all(|b| b.txs.is_empty()));
        assert_eq!(blocks[1].prev, blocks[0].hash);
        assert_eq!(blocks[2].time, blocks[1].time + BLOCK_INTERVAL);
        assert_eq!(chain.mempool().count(), 1);
        assert_eq!(chain.tip(), &blocks[2]);
    }

    #[test]
    fn replace_by_fee() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(100_000), anyone());
        let original = rbf(&f, 99_000); // fee 1000
        let child = simple(&original, 98_000); // fee 1000
        chain.submit(original.clone()).unwrap();
        chain.submit(child.clone()).unwrap();
        let vsize = rbf(&f, 0).vsize() as u64;

        // Must pay 2000 (what it evicts) plus its own size.
        let short = rbf(&f, 100_000 - 2_000 - vsize + 1);
        assert_eq!(
            chain.submit(short),
            Err(Reject::ReplacementNotAllowed {
                reason: "the fee does not pay for the replaced transactions plus 1 sat/vB of its own size"
            })
        );
        // Spending the transaction it replaces.
        let own_child = spend(&[(op(&f, 0), Sequence::ZERO), (op(&original, 0), Sequence::ZERO)], &[1]);
        assert!(matches!(chain.submit(own_child), Err(Reject::ReplacementNotAllowed { .. })));

        let bump = rbf(&f, 100_000 - 2_000 - vsize);
        chain.submit(bump.clone()).unwrap();
        assert_eq!(mempool_ids(&chain), vec![bump.compute_txid()]);
        assert!(!chain.in_mempool(&original.compute_txid()));
        assert!(!chain.in_mempool(&child.compute_txid()));
        // The evicted child's input is free again... and its parent is gone.
        assert_eq!(chain.submit(child), Err(Reject::MissingInput(op(&original, 0))));
        assert_eq!(chain.mine().txs, vec![bump]);
    }

    #[test]
    fn replacement_needs_signalling_and_a_higher_fee_rate() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(100_000), anyone());
        let g = chain.fund(sat(100_000), anyone());

        let final_seq = simple(&f, 99_000);
        chain.submit(final_seq).unwrap();
        assert_eq!(
            chain.submit(rbf(&f, 50_000)),
            Err(Reject::ReplacementNotAllowed { reason: "a conflicting transaction does not signal replaceability" })
        );

        // A small transaction at a high fee rate, against a large one that
        // pays more in total but at a lower rate.
        let small = rbf(&g, 90_000); // 10_000 fee
        chain.submit(small.clone()).unwrap();
        let mut large = spend(&[(op(&g, 0), Sequence::ENABLE_RBF_NO_LOCKTIME)], &[1; 100]);
        large.output[0].value = sat(100_000 - 99 - 11_000);
        assert!(large.vsize() > 10 * small.vsize());
        assert_eq!(
            chain.submit(large),
            Err(Reject::ReplacementNotAllowed {
                reason: "the fee rate is not higher than a conflicting transaction's"
            })
        );
        assert!(chain.in_mempool(&small.compute_txid()));
    }

    #[test]
    fn scripts_are_checked_for_every_input() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let mut chain = SimChain::with_verifier(Box::new(move |tx: &Transaction, input: usize, spent: &TxOut| {
            seen.lock().unwrap().push((input, spent.value));
            if tx.input[input].witness.is_empty() {
                Err("empty witness".to_string())
            } else {
                Ok(())
            }
        }));
        let f = chain.fund(sat(1_000), anyone());
        let g = chain.fund(sat(2_000), anyone());
        assert!(calls.lock().unwrap().is_empty());
        let mut tx = spend(&[(op(&f, 0), Sequence::MAX), (op(&g, 0), Sequence::MAX)], &[2_500]);
        tx.input[1].witness = Witness::new();
        assert_eq!(chain.submit(tx.clone()), Err(Reject::Script { input: 1, reason: "empty witness".to_string() }));
        assert_eq!(*calls.lock().unwrap(), vec![(0, sat(1_000)), (1, sat(2_000))]);
        tx.input[1].witness = Witness::from_slice(&[vec![1u8]]);
        chain.confirm(tx).unwrap();
        // Mining does not run the verifier again.
        assert_eq!(calls.lock().unwrap().len(), 4);
    }

    #[test]
    fn reorg_returns_transactions_to_the_mempool() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let tx = simple(&f, 49_000);
        let old = chain.confirm(tx.clone()).unwrap();
        let waiting = simple(&tx, 48_000);
        chain.submit(waiting.clone()).unwrap();

        let gone = chain.reorg(1);
        assert_eq!(gone, vec![old.clone()]);
        assert_eq!(chain.height(), 1);
        assert_eq!(chain.confirmations(&tx.compute_txid()), 0);
        assert!(chain.spender(&op(&f, 0)).is_none());
        assert!(chain.utxo(&op(&f, 0)).is_some());
        assert!(chain.utxo(&op(&tx, 0)).is_none());
        // Block transactions first, then what was waiting.
        assert_eq!(mempool_ids(&chain), vec![tx.compute_txid(), waiting.compute_txid()]);

        let new = chain.mine();
        assert_eq!(new.txs, vec![tx.clone(), waiting]);
        assert_eq!(new.height, old.height);
        assert_ne!(new.hash, old.hash);
        assert_eq!(chain.spender(&op(&f, 0)), Some(&tx));
    }

    #[test]
    fn reorg_returns_blocks_tip_first_and_keeps_genesis() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let blocks = chain.mine_empty(2);
        let genesis = chain.block(0).unwrap().clone();
        let gone = chain.reorg(10);
        assert_eq!(gone.iter().map(|b| b.height).collect::<Vec<_>>(), vec![3, 2, 1]);
        assert_eq!(gone[0], blocks[1]);
        assert_eq!(chain.tip(), &genesis);
        // The funding transaction waits in the mempool and confirms again.
        assert!(chain.utxo(&op(&f, 0)).is_none());
        assert_eq!(mempool_ids(&chain), vec![f.compute_txid()]);
        assert_eq!(chain.mine().txs, vec![f.clone()]);
        assert!(chain.utxo(&op(&f, 0)).is_some());
        assert_eq!(chain.reorg(0), vec![]);
    }

    #[test]
    fn reorg_drops_what_is_no_longer_valid_and_its_descendants() {
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let g = chain.fund(sat(50_000), anyone());
        chain.mine_empty(2);
        // g confirmed at 2 with a 3-block relative lock: block 5 or later.
        let relative = spend(&[(op(&g, 0), Sequence::from_height(3))], &[49_000]);
        chain.submit(relative.clone()).unwrap();
        assert_eq!(chain.mine().txs, vec![relative.clone()]);
        // A lock at height 5: block 6 or later.
        let mut locked = spend(&[(op(&f, 0), Sequence::ZERO)], &[49_000]);
        locked.lock_time = LockTime::from_height(5).unwrap();
        chain.submit(locked.clone()).unwrap();
        assert_eq!(chain.mine().txs, vec![locked.clone()]);
        let child = simple(&locked, 48_000);
        chain.submit(child.clone()).unwrap();
        assert_eq!(chain.height(), 6);

        // Tip 5: `locked` may enter block 6 again, and its child after it.
        chain.reorg(1);
        assert_eq!(mempool_ids(&chain), vec![locked.compute_txid(), child.compute_txid()]);
        // Tip 3: neither lock is reached; the child goes with its parent; g
        // stays confirmed.
        chain.reorg(2);
        assert_eq!(chain.height(), 3);
        assert_eq!(chain.mempool().count(), 0);
        assert!(chain.utxo(&op(&g, 0)).is_some());
        assert!(chain.utxo(&op(&f, 0)).is_some());

        // A relative lock whose input is disconnected too is dropped.
        let mut chain = SimChain::new();
        let f = chain.fund(sat(50_000), anyone());
        let sweep = spend(&[(op(&f, 0), Sequence::from_height(1))], &[49_000]);
        chain.confirm(sweep.clone()).unwrap();
        chain.reorg(2);
        assert_eq!(mempool_ids(&chain), vec![f.compute_txid()]);
        assert!(matches!(chain.submit(sweep.clone()), Err(Reject::RelativeLock { input: 0, .. })));
        chain.mine();
        chain.confirm(sweep).unwrap();
    }

    #[test]
    fn hashes_depend_on_history() {
        let mut a = SimChain::new();
        let mut b = SimChain::new();
        a.mine_empty(2);
        b.mine_empty(2);
        assert_eq!(a.tip(), b.tip());
        let before = a.tip().hash;
        a.reorg(1);
        let after = a.mine_empty(1).pop().unwrap();
        assert_ne!(after.hash, before);
        assert_eq!(after.prev, a.block(1).unwrap().hash);
        let fa = a.fund(sat(1), anyone());
        let fb = b.fund(sat(1), anyone());
        assert_eq!(fa, fb);
    }

    #[test]
    fn reject_messages_keep_the_context() {
        let outpoint = OutPoint { txid: Txid::from_byte_array([1; 32]), vout: 2 };
        assert!(Reject::MissingInput(outpoint).to_string().contains(":2"));
        let lock = Reject::RelativeLock { input: 1, sequence: Sequence::from_height(144) };
        assert_eq!(lock.to_string(), "input 1: relative lock 0x90 is not reached");
        let non_final =
            Reject::NonFinal { lock_time: LockTime::from_height(10).unwrap(), height: 5, time: GENESIS_TIME };
        assert!(non_final.to_string().contains("block 5"));
    }
}
