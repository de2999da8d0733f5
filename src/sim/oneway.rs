//! A merchant and its clients in memory on the simulated chain: every
//! message through the one-way wire codec, every chain question answered
//! from the chain, every stored state kept so that either side can crash and
//! be restored. The `merchant` example, the tests and the property test
//! drive it.

use std::collections::VecDeque;
use std::sync::Arc;

use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction};

use super::chain::{Reject, SimChain};
use crate::oneway::client::{Client, ClientConfig, ClientEvent, ClientOutput};
use crate::oneway::merchant::{FundingStatus, Merchant, MerchantConfig, MerchantEvent, MerchantOutput, OutpointStatus};
use crate::oneway::script::OutputKind;
use crate::oneway::tx::DustPolicy;
use crate::oneway::wire::{self, Policy};
use crate::tx::InMemorySigner;

/// The merchant settings the simulator's tests, examples and fuzz target
/// use: channels of 10,000 sat to 10 BTC, `T` 50 to 5,000 blocks away, 6
/// blocks of margin each way, fees of 1 to 50 sat/vB, Bitcoin Core's dust
/// rule, final after 6 blocks, a tip at most two hours old.
pub fn merchant_config(kind: OutputKind, payout_script: ScriptBuf, min_depth: u32) -> MerchantConfig {
    MerchantConfig {
        network: "regtest".into(),
        policy: Policy {
            min_capacity: Amount::from_sat(10_000),
            max_capacity: Amount::from_sat(1_000_000_000),
            min_lock_delta: 50,
            max_lock_delta: 5_000,
            min_depth,
            accept_margin: 6,
            settle_margin: 6,
            min_fee_rate: 1_000,
            max_fee_rate: 50_000,
            kind,
        },
        payout_script,
        dust: DustPolicy::default(),
        bury_depth: 6,
        max_tip_age: 7_200,
    }
}

/// The client settings to match [`merchant_config`]: `capacity` locked
/// `lock_delta` blocks, payments and refund at 2 sat/vB, either output kind.
pub fn client_config(capacity: Amount, lock_delta: u32, change_script: ScriptBuf) -> ClientConfig {
    ClientConfig {
        network: "regtest".into(),
        pinned_merchant_key: None,
        capacity,
        lock_delta,
        fee_rate: bitcoin::FeeRate::from_sat_per_vb_u32(2),
        refund_fee_rate: bitcoin::FeeRate::from_sat_per_vb_u32(2),
        change_script,
        kinds: vec![OutputKind::P2wsh, OutputKind::P2sh],
        dust: DustPolicy::default(),
        bury_depth: 6,
    }
}

/// One client and what it emitted.
pub struct ClientNode {
    /// The client.
    pub client: Client,
    /// Its configuration (to restore it).
    pub config: ClientConfig,
    /// Its keys.
    pub signer: Arc<InMemorySigner>,
    /// Its last stored state.
    pub stored: Vec<u8>,
    /// Its events, in order.
    pub events: Vec<ClientEvent>,
    /// When false, its writes are not confirmed.
    pub auto_persist: bool,
}

/// A merchant, its clients, a chain, and the messages between them.
pub struct Shop {
    /// The chain.
    pub chain: SimChain,
    /// The merchant.
    pub merchant: Merchant,
    /// Its keys.
    pub merchant_signer: Arc<InMemorySigner>,
    /// Its last stored state.
    pub merchant_stored: Vec<u8>,
    /// Its events, in order.
    pub merchant_events: Vec<MerchantEvent>,
    /// The clients; a client's index is its connection token.
    pub clients: Vec<ClientNode>,
    /// Encoded messages in flight: (client, towards the merchant, bytes).
    pub wire: VecDeque<(usize, bool, Vec<u8>)>,
    /// Broadcasts the chain refused.
    pub refused: Vec<(Transaction, Reject)>,
    /// What happened, a line each (for the example's diagram).
    pub log: Vec<String>,
    /// Every message delivered, in order: (client, towards the merchant,
    /// bytes), to replay.
    pub delivered: Vec<(usize, bool, Vec<u8>)>,
}

impl Shop {
    /// A merchant with `config`, on `chain` (mined to at least height 100).
    pub fn new(config: MerchantConfig, mut chain: SimChain) -> Self {
        if chain.height() < 100 {
            chain.mine_empty(100 - chain.height());
        }
        let signer = Arc::new(InMemorySigner::new(super::secret(21), super::secret(22)));
        let mut merchant = Merchant::new(config, signer.clone());
        merchant.handle_block(chain.height(), chain.time());
        let mut shop = Shop {
            chain,
            merchant,
            merchant_signer: signer,
            merchant_stored: Vec::new(),
            merchant_events: Vec::new(),
            clients: Vec::new(),
            wire: VecDeque::new(),
            refused: Vec::new(),
            log: Vec::new(),
            delivered: Vec::new(),
        };
        shop.pump();
        shop
    }

    /// A new client with `config` and keys from `seed`; it asks for a
    /// channel at once. Returns its index.
    pub fn add_client(&mut self, config: ClientConfig, seed: u64) -> usize {
        let signer = Arc::new(InMemorySigner::new(super::secret(1000 + seed), super::secret(2000 + seed)));
        let client = Client::new(config.clone(), signer.clone(), 0, self.chain.height());
        self.clients.push(ClientNode {
            client,
            config,
            signer,
            stored: Vec::new(),
            events: Vec::new(),
            auto_persist: true,
        });
        let n = self.clients.len() - 1;
        self.pump();
        n
    }

    /// Drains every output and delivers every message until all are quiet.
    pub fn pump(&mut self) {
        for _ in 0..1000 {
            let mut any = self.drain_merchant();
            for n in 0..self.clients.len() {
                any |= self.drain_client(n);
            }
            if let Some((n, to_merchant, bytes)) = self.wire.pop_front() {
                any = true;
                self.deliver(n, to_merchant, &bytes);
                self.delivered.push((n, to_merchant, bytes));
            }
            if !any {
                return;
            }
        }
    }

    fn deliver(&mut self, n: usize, to_merchant: bool, bytes: &[u8]) {
        match (wire::decode(bytes), to_merchant) {
            (Ok(m), true) => {
                self.log.push(format!("client {n} -> merchant: {}", m.name()));
                self.merchant.handle_message(n as u64, m);
            }
            (Err(e), true) => self.merchant.handle_malformed(n as u64, &e),
            (Ok(m), false) => {
                self.log.push(format!("merchant -> client {n}: {}", m.name()));
                if let Some(c) = self.clients.get_mut(n) {
                    c.client.handle_message(m);
                }
            }
            (Err(_), false) => {}
        }
    }

    fn answer_outpoint(&self, outpoint: &OutPoint) -> OutpointStatus {
        match self.chain.spender(outpoint) {
            Some(tx) => {
                OutpointStatus::Spent { tx: tx.clone(), confirmations: self.chain.confirmations(&tx.compute_txid()) }
            }
            None => OutpointStatus::Unspent,
        }
    }

    fn submit(&mut self, tx: Transaction) {
        match self.chain.submit(tx.clone()) {
            Ok(_) | Err(Reject::AlreadyKnown) => {}
            Err(e) => self.refused.push((tx, e)),
        }
    }

    fn drain_merchant(&mut self) -> bool {
        let mut any = false;
        while let Some(o) = self.merchant.poll_output() {
            any = true;
            match o {
                MerchantOutput::Persist { version, state } => {
                    self.merchant_stored = state;
                    self.merchant.handle_persisted(version);
                }
                MerchantOutput::Send { peer, message } => {
                    self.wire.push_back((peer as usize, false, wire::encode(&message)))
                }
                MerchantOutput::Broadcast(tx) => self.submit(tx),
                MerchantOutput::QueryFunding { outpoint } => {
                    let status = match (self.chain.utxo(&outpoint), self.chain.spender(&outpoint)) {
                        (Some(out), _) => FundingStatus::Found {
                            confirmations: self.chain.confirmations(&outpoint.txid),
                            value: out.value,
                            unspent: true,
                        },
                        (None, Some(_)) => {
                            FundingStatus::Found { confirmations: 1, value: Amount::ZERO, unspent: false }
                        }
                        (None, None) => FundingStatus::Missing,
                    };
                    self.merchant.handle_funding(outpoint, status);
                }
                MerchantOutput::QueryOutpoint { outpoint } => {
                    let status = self.answer_outpoint(&outpoint);
                    self.merchant.handle_outpoint(outpoint, status);
                }
                MerchantOutput::Event(e) => {
                    self.log.push(format!("merchant: {e:?}"));
                    self.merchant_events.push(e);
                }
            }
        }
        any
    }

    fn drain_client(&mut self, n: usize) -> bool {
        let mut any = false;
        while let Some(o) = self.clients[n].client.poll_output() {
            any = true;
            match o {
                ClientOutput::Persist { version, state } => {
                    let c = &mut self.clients[n];
                    c.stored = state;
                    if c.auto_persist {
                        c.client.handle_persisted(version);
                    }
                }
                ClientOutput::Send(m) => self.wire.push_back((n, true, wire::encode(&m))),
                ClientOutput::FundChannel { amount, script_pubkey, min_depth } => {
                    // The wallet funds, and hands the funding over once it
                    // is deep enough for the merchant.
                    let tx = self.chain.fund(amount, script_pubkey);
                    self.log.push(format!("client {n}: funds the channel with {amount}"));
                    self.chain.mine_empty(min_depth.saturating_sub(1));
                    let h = self.chain.height();
                    self.merchant.handle_block(h, self.chain.time());
                    for c in &mut self.clients {
                        c.client.handle_block(h);
                    }
                    let _ = self.clients[n].client.provide_funding(tx);
                }
                ClientOutput::Broadcast(tx) => self.submit(tx),
                ClientOutput::QueryOutpoint { outpoint } => {
                    let status = self.answer_outpoint(&outpoint);
                    self.clients[n].client.handle_outpoint(outpoint, status);
                }
                ClientOutput::Event(e) => {
                    self.log.push(format!("client {n}: {e:?}"));
                    self.clients[n].events.push(e);
                }
            }
        }
        any
    }

    /// Delivers again the `k`th message ever delivered (modulo their
    /// number): a replay.
    pub fn replay(&mut self, k: usize) {
        if self.delivered.is_empty() {
            return;
        }
        let (n, to_merchant, bytes) = self.delivered[k % self.delivered.len()].clone();
        self.deliver(n, to_merchant, &bytes);
        self.pump();
    }

    /// Mines one block and shows it to everyone.
    pub fn mine(&mut self) {
        self.chain.mine();
        let h = self.chain.height();
        self.merchant.handle_block(h, self.chain.time());
        for c in &mut self.clients {
            c.client.handle_block(h);
        }
        self.pump();
    }

    /// Mines `n` blocks.
    pub fn mine_n(&mut self, n: u32) {
        for _ in 0..n {
            self.mine();
        }
    }

    /// The merchant crashes and restarts from what it stored.
    pub fn restart_merchant(&mut self) {
        let config = self.merchant.config().clone();
        self.merchant = Merchant::restore(config, self.merchant_signer.clone(), &self.merchant_stored)
            .expect("the merchant's own store restores");
        self.merchant.handle_block(self.chain.height(), self.chain.time());
        self.pump();
    }

    /// Client `n` crashes and restarts from what it stored.
    pub fn restart_client(&mut self, n: usize) {
        let c = &mut self.clients[n];
        c.client =
            Client::restore(c.config.clone(), c.signer.clone(), &c.stored).expect("the client's own store restores");
        c.client.handle_block(self.chain.height());
        self.pump();
    }

    /// What `script` received on chain.
    pub fn received(&self, script: &ScriptBuf) -> Amount {
        (1..=self.chain.height())
            .filter_map(|h| self.chain.block(h))
            .flat_map(|b| b.txs.iter())
            .flat_map(|t| t.output.iter())
            .filter(|o| o.script_pubkey == *script)
            .map(|o| o.value)
            .sum()
    }
}
