//! Classifying the anchor's spend (C1-b) and deciding, for every output of
//! it, whose it is, what we claim, from when, and at which fee (C1-c..e,
//! D13). Everything here is a function of the persisted state and the tip:
//! a reorganisation needs no undo, only a new evaluation (C1-f).

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::{BTreeMap, BTreeSet};

use bitcoin::hashes::{sha256, Hash as _};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Txid};

use super::{Confirmed, Monitor, MonitorEvent, State, Tip};
use crate::channel::Side;
use crate::shachain::RevocationSecrets;
use crate::tx::commitment::{
    commitment_number, recognise, CommitmentOutput, CommitmentTemplate, HtlcDirection, HtlcSpec, OutputKind,
    RecognisedOutputs,
};
use crate::tx::penalty::build_penalty_from;
use crate::tx::sweep::{build_sweep, Claim, SweepError, SweepInput};
use crate::types::{Delay, Preimage};

/// What spent the anchor (C1-b).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SpendKind {
    /// A close transaction we signed (section 4).
    MutualClose,
    /// Our current commitment.
    OurCommitment {
        /// Its number.
        number: u64,
    },
    /// The peer's current commitment, or its previous one not yet revoked.
    TheirCommitment {
        /// Its number.
        number: u64,
    },
    /// A commitment the peer revoked: every output is ours (R6.1-b).
    RevokedCommitment {
        /// Its number, read from its lock fields (D10).
        number: u64,
    },
    /// Nothing the monitor knows.
    Unknown,
}

/// How an output of the anchor spend ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resolution {
    /// Our claim confirmed in `txid`.
    Claimed {
        /// The claim.
        txid: Txid,
    },
    /// It pays our `final_key` directly (P2WPKH): the wallet spends it like
    /// any other output.
    Wallet,
    /// The peer took it on a path the scripts give it (an HTLC we offered,
    /// claimed with `R`; one it offered, timed out).
    Peer {
        /// The peer's transaction.
        txid: Txid,
    },
    /// The peer spent an output of a revoked commitment before our penalty
    /// confirmed (C1-e): reported, never silently lost.
    Lost {
        /// The peer's transaction.
        txid: Txid,
    },
}

/// One amount we own or may own on chain, as LDK's claimable balances
/// (C1-g). Before any spend, the channel balance; after, one entry per
/// output or claim still ours and not yet final.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Balance {
    /// Our balance in our current commitment, before its share of the
    /// commitment's fee: what a close would give us.
    ClaimableOnChannelClose {
        /// The amount.
        amount: Amount,
    },
    /// An output we can claim now.
    ClaimableNow {
        /// The output.
        outpoint: OutPoint,
        /// Its value.
        amount: Amount,
    },
    /// An output we can claim once the chain reaches `height`.
    ClaimableAt {
        /// The output.
        outpoint: OutPoint,
        /// Its value.
        amount: Amount,
        /// The first tip height at which our claim is valid.
        height: u32,
    },
    /// Ours, confirmed, not yet `final_depth` deep (D12): a claim's output,
    /// or an output paying our `final_key`.
    AwaitingConfirmations {
        /// The output holding it.
        outpoint: OutPoint,
        /// Its value.
        amount: Amount,
        /// The tip height at which it is final.
        final_height: u32,
    },
    /// An HTLC either side may still take: the peer with `R` (or its
    /// timeout), we with its timeout (or `R`).
    Contested {
        /// The output, once on chain.
        outpoint: Option<OutPoint>,
        /// Its value.
        amount: Amount,
        /// When the timeout path opens.
        timeout_height: u32,
    },
}

impl Balance {
    /// The amount.
    pub fn amount(&self) -> Amount {
        match self {
            Balance::ClaimableOnChannelClose { amount }
            | Balance::ClaimableNow { amount, .. }
            | Balance::ClaimableAt { amount, .. }
            | Balance::AwaitingConfirmations { amount, .. }
            | Balance::Contested { amount, .. } => *amount,
        }
    }
}

/// When a claim becomes valid: the tip must be at `height` or above and its
/// time at `time` or above.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Lock {
    height: u32,
    time: u32,
}

impl Lock {
    fn and(self, other: Lock) -> Lock {
        Lock { height: self.height.max(other.height), time: self.time.max(other.time) }
    }

    fn open(&self, tip: &Tip) -> bool {
        tip.height >= self.height && tip.time >= self.time
    }

    /// The CSV `delay` counted from a confirmation (BIP 68; the time form
    /// counted from the block's time, which the simulated chain also uses).
    fn csv(delay: Delay, height: u32, time: u32) -> Lock {
        match delay {
            Delay::Blocks(b) => Lock { height: height.saturating_add(u32::from(b)).saturating_sub(1), time: 0 },
            Delay::Seconds(_) => {
                let units = u32::from(delay.to_sequence().0 as u16);
                Lock { height: 0, time: time.saturating_add(units * 512) }
            }
        }
    }

    /// A CLTV `expiry`: valid in a block once the lock time is below its
    /// height (or below the tip's median time).
    fn cltv(expiry: bitcoin::absolute::LockTime) -> Lock {
        match expiry {
            bitcoin::absolute::LockTime::Blocks(h) => Lock { height: h.to_consensus_u32(), time: 0 },
            bitcoin::absolute::LockTime::Seconds(t) => Lock { height: 0, time: t.to_consensus_u32().saturating_add(1) },
        }
    }

    /// The tip height at which it opens, estimating 600 seconds per block
    /// for the time form.
    fn height_estimate(&self, tip: &Tip) -> u32 {
        let by_time = tip.height.saturating_add(self.time.saturating_sub(tip.time).div_ceil(600));
        self.height.max(if self.time > tip.time { by_time } else { 0 })
    }
}

/// What becomes of one output of the anchor spend.
#[derive(Clone, Debug)]
enum Fate {
    /// The peer's, or an HTLC whose `R` we do not know (R6.2-d).
    NotOurs,
    /// Pays our `final_key`.
    Wallet,
    /// We claim it.
    Claim {
        claim: Claim,
        lock: Lock,
        /// The tip height by which the claim should confirm (D13).
        deadline: Option<u32>,
        /// The peer may take it too until then (an HTLC racing its timeout).
        contested: Option<u32>,
        penalty: bool,
    },
}

#[derive(Clone, Debug)]
struct Out {
    out: CommitmentOutput,
    fate: Fate,
    /// The confirmed transaction spending it: (txid, height, ours).
    spent: Option<(Txid, u32, bool)>,
}

/// The anchor spend in the current chain, understood.
#[derive(Clone, Debug)]
struct Analysis {
    txid: Txid,
    height: u32,
    kind: SpendKind,
    delay: Delay,
    revocation_hash: sha256::Hash,
    outs: Vec<Out>,
    /// Outputs that match nothing the monitor knows.
    unknown: Vec<u32>,
}

/// A recognised anchor spend: the owner, the delay and revocation hash of
/// its revocable outputs, and the outputs.
type Recognised = (Side, Delay, sha256::Hash, RecognisedOutputs);

/// What was reported, to report changes only.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    pub(crate) spend: Option<(Txid, SpendKind)>,
    resolved: BTreeMap<OutPoint, Resolution>,
    learned: BTreeSet<sha256::Hash>,
    uneconomical: BTreeSet<OutPoint>,
    unknown: BTreeSet<OutPoint>,
    final_: bool,
}

impl State {
    fn anchor_spend(&self) -> Option<&Confirmed> {
        let anchor = self.params.as_ref()?.funding.outpoint();
        self.confirmed.iter().find(|c| c.tx.input.iter().any(|i| i.previous_output == anchor))
    }

    fn spender(&self, outpoint: OutPoint) -> Option<&Confirmed> {
        self.confirmed.iter().find(|c| c.tx.input.iter().any(|i| i.previous_output == outpoint))
    }

    /// The HTLCs `side`'s commitment `number` may hold, directions seen from
    /// `side` (D11).
    fn candidates(&self, side: Side, number: u64) -> Vec<HtlcSpec> {
        self.records
            .iter()
            .filter(|r| r.held_by(side, number))
            .map(|r| {
                let direction = if r.htlc.offerer == side { HtlcDirection::Offered } else { HtlcDirection::Received };
                HtlcSpec::new(direction, r.htlc.id, r.htlc.amount.msat(), r.htlc.r_hash, r.htlc.expiry)
            })
            .collect()
    }

    /// Classifies `spend` (C1-b) and recognises its outputs.
    fn classify(&self, spend: &Confirmed) -> (SpendKind, Option<Recognised>) {
        let p = self.params.as_ref().expect("a spend is looked for only with parameters");
        let template = |owner: Side, hash: sha256::Hash, htlcs: &[HtlcSpec]| {
            let (owner_final, other_final, delay) = match owner {
                Side::Local => (p.our_final, p.their_final, p.our_delay),
                Side::Remote => (p.their_final, p.our_final, p.their_delay),
            };
            let t = CommitmentTemplate { owner_final, other_final, delay, revocation_hash: hash, htlcs };
            (recognise(&spend.tx, &t), delay)
        };
        let Some(number) = commitment_number(&spend.tx, p.obscuring) else {
            let ours = ScriptBuf::new_p2wpkh(&p.our_final.wpubkey_hash());
            let theirs = ScriptBuf::new_p2wpkh(&p.their_final.wpubkey_hash());
            let close = !spend.tx.output.is_empty()
                && spend.tx.output.iter().all(|o| o.script_pubkey == ours || o.script_pubkey == theirs);
            if !close {
                return (SpendKind::Unknown, None);
            }
            let outputs = spend
                .tx
                .output
                .iter()
                .enumerate()
                .filter(|(_, o)| o.script_pubkey == ours)
                .map(|(vout, o)| CommitmentOutput {
                    vout: vout as u32,
                    value: o.value,
                    kind: OutputKind::ToOther,
                    witness_script: None,
                })
                .collect();
            return (
                SpendKind::MutualClose,
                Some((
                    Side::Remote,
                    p.their_delay,
                    sha256::Hash::all_zeros(),
                    RecognisedOutputs { outputs, unknown: Vec::new() },
                )),
            );
        };
        if let Some(k) = [self.ours, self.ours_prev].into_iter().flatten().find(|k| k.txid == spend.txid) {
            let (r, delay) = template(Side::Local, k.revocation_hash, &self.candidates(Side::Local, number));
            return (SpendKind::OurCommitment { number }, Some((Side::Local, delay, k.revocation_hash, r)));
        }
        if let Some(k) = [self.theirs, self.theirs_prev].into_iter().flatten().find(|k| k.txid == spend.txid) {
            let (r, delay) = template(Side::Remote, k.revocation_hash, &self.candidates(Side::Remote, number));
            return (SpendKind::TheirCommitment { number }, Some((Side::Remote, delay, k.revocation_hash, r)));
        }
        if number < 1 << 48 {
            if let Some(preimage) = self.secrets.preimage(RevocationSecrets::index(number)) {
                let (r, delay) = template(Side::Remote, preimage.hash(), &self.candidates(Side::Remote, number));
                // The number and the preimage authenticate it; an output
                // whose record is missing is reported, the rest punished.
                let all = r.unknown.is_empty() && !r.outputs.is_empty();
                if all || r.outputs.iter().any(|o| o.kind != OutputKind::ToOther) {
                    return (SpendKind::RevokedCommitment { number }, Some((Side::Remote, delay, preimage.hash(), r)));
                }
            }
        }
        (SpendKind::Unknown, None)
    }

    fn preimage_for(&self, hash: &sha256::Hash) -> Option<Preimage> {
        self.preimages.get(hash).copied()
    }
}

/// The tip height by which a commitment confirmed at `height` lets its
/// owner use its delayed paths.
fn delay_deadline(delay: Delay, height: u32) -> u32 {
    match delay {
        Delay::Blocks(b) => height.saturating_add(u32::from(b)),
        Delay::Seconds(s) => height.saturating_add(s / 600),
    }
}

fn expiry_height(expiry: bitcoin::absolute::LockTime, tip: &Tip) -> u32 {
    Lock::cltv(expiry).height_estimate(tip)
}

impl Monitor {
    fn analyse(&self) -> Option<Analysis> {
        let s = &self.state;
        let tip = s.tip?;
        let spend = s.anchor_spend()?;
        let (kind, recognised) = s.classify(spend);
        let Some((owner, delay, revocation_hash, RecognisedOutputs { outputs, unknown })) = recognised else {
            return Some(Analysis {
                txid: spend.txid,
                height: spend.height,
                kind,
                delay: Delay::Blocks(0),
                revocation_hash: sha256::Hash::all_zeros(),
                outs: Vec::new(),
                unknown: Vec::new(),
            });
        };
        let csv = Lock::csv(delay, spend.height, spend.time);
        let penalty_deadline = delay_deadline(delay, spend.height);
        let revoked = matches!(kind, SpendKind::RevokedCommitment { .. });
        let preimage = revoked.then(|| {
            let SpendKind::RevokedCommitment { number } = kind else { unreachable!("checked") };
            s.secrets.preimage(RevocationSecrets::index(number)).expect("classified with it")
        });
        let mut outs = Vec::with_capacity(outputs.len());
        for out in outputs {
            let fate = match (kind, &out.kind) {
                (SpendKind::MutualClose, _) => Fate::Wallet,
                (_, OutputKind::ToOther) if owner == Side::Remote => Fate::Wallet,
                (_, OutputKind::ToOther) => Fate::NotOurs,
                (SpendKind::RevokedCommitment { .. }, _) => Fate::Claim {
                    claim: Claim::Revocation(preimage.expect("revoked")),
                    lock: Lock::default(),
                    deadline: Some(penalty_deadline),
                    contested: None,
                    penalty: true,
                },
                (_, OutputKind::ToOwner) if owner == Side::Local => Fate::Claim {
                    claim: Claim::DelayedToSelf,
                    lock: csv,
                    deadline: None,
                    contested: None,
                    penalty: false,
                },
                (_, OutputKind::ToOwner) => Fate::NotOurs,
                (_, OutputKind::Htlc(h)) => {
                    let ours_offered = (owner == Side::Local) == (h.direction == HtlcDirection::Offered);
                    if ours_offered {
                        // R6.2-b: ours back after expiry (and the delay on
                        // our own commitment); the peer may take it with R
                        // until then.
                        let lock =
                            if owner == Side::Local { Lock::cltv(h.expiry).and(csv) } else { Lock::cltv(h.expiry) };
                        Fate::Claim {
                            claim: Claim::Timeout,
                            lock,
                            deadline: None,
                            contested: Some(lock.height_estimate(&tip)),
                            penalty: false,
                        }
                    } else {
                        match s.preimage_for(&h.r_hash) {
                            // R6.2-c: claim it before the peer's timeout.
                            Some(r) => {
                                let (lock, deadline) = if owner == Side::Local {
                                    (csv, expiry_height(h.expiry, &tip))
                                } else {
                                    (Lock::default(), expiry_height(h.expiry, &tip).max(penalty_deadline))
                                };
                                Fate::Claim {
                                    claim: Claim::Success(r),
                                    lock,
                                    deadline: Some(deadline),
                                    contested: Some(deadline),
                                    penalty: false,
                                }
                            }
                            // R6.2-d
                            None => Fate::NotOurs,
                        }
                    }
                }
            };
            let outpoint = OutPoint { txid: spend.txid, vout: out.vout };
            let spent = s.spender(outpoint).map(|c| {
                let ours = c.tx.output.iter().all(|o| o.script_pubkey == self.config.destination);
                (c.txid, c.height, ours)
            });
            outs.push(Out { out, fate, spent });
        }
        Some(Analysis { txid: spend.txid, height: spend.height, kind, delay, revocation_hash, outs, unknown })
    }

    /// Whether a transaction confirmed at `height` is `final_depth` deep.
    fn buried(&self, height: u32, tip: &Tip) -> bool {
        u64::from(tip.height) + 1 >= u64::from(height) + u64::from(self.config.final_depth.max(1))
    }

    /// The fee rate for a claim with `deadline` at the current tip (D13): the
    /// caller's estimate, rising linearly to the cap over the last
    /// `urgency_blocks` before the deadline.
    fn rate_for(&self, deadline: Option<u32>, tip: u32) -> FeeRate {
        let cap = self.config.max_fee_rate;
        let base = self.fee_estimate.min(cap);
        let Some(deadline) = deadline else { return base };
        let window = u64::from(self.config.urgency_blocks.max(1));
        let left = u64::from(deadline.saturating_sub(tip)).min(window);
        let (b, c) = (base.to_sat_per_kwu(), cap.to_sat_per_kwu());
        FeeRate::from_sat_per_kwu(b + (c - b) * (window - left) / window)
    }

    /// Re-evaluates everything after an input: claims to broadcast,
    /// outputs to watch, events to report.
    pub(super) fn evaluate(&mut self) {
        let Some(tip) = self.state.tip else { return };
        let analysis = self.analyse();
        let mut report = Report { learned: self.reported.learned.clone(), ..Report::default() };
        let mut claims: Vec<(Vec<SweepInput>, Option<u32>, bool)> = Vec::new();
        let mut penalty: Vec<CommitmentOutput> = Vec::new();
        let mut penalty_deadline = None;
        let mut learned = Vec::new();
        if let Some(a) = &analysis {
            report.spend = Some((a.txid, a.kind));
            report.unknown = a.unknown.iter().map(|v| OutPoint { txid: a.txid, vout: *v }).collect();
            let mut all_final = self.buried(a.height, &tip);
            for o in &a.outs {
                let outpoint = OutPoint { txid: a.txid, vout: o.out.vout };
                if !matches!(o.fate, Fate::NotOurs) || matches!(o.out.kind, OutputKind::Htlc(_)) {
                    let spk = self.state.confirmed.iter().find(|c| c.txid == a.txid).map(|c| {
                        c.tx.output.get(o.out.vout as usize).map(|t| t.script_pubkey.clone()).unwrap_or_default()
                    });
                    self.watch(outpoint, spk.unwrap_or_default());
                }
                // R6.2-a: R from the peer's claim of an HTLC.
                if let (OutputKind::Htlc(h), Some((txid, _, _))) = (&o.out.kind, o.spent) {
                    if let Some(r) = self.revealed(txid, outpoint, &h.r_hash) {
                        let offerer = match h.direction {
                            HtlcDirection::Offered => owner_of(a.kind),
                            HtlcDirection::Received => owner_of(a.kind).other(),
                        };
                        learned.push((offerer, h.id, r));
                    }
                }
                match (&o.fate, o.spent) {
                    (Fate::Wallet, _) => {
                        report.resolved.insert(outpoint, Resolution::Wallet);
                    }
                    (Fate::Claim { penalty: is_penalty, .. }, Some((txid, height, ours))) => {
                        let resolution = match (ours, is_penalty) {
                            (true, _) => Resolution::Claimed { txid },
                            (false, true) => Resolution::Lost { txid },
                            (false, false) => Resolution::Peer { txid },
                        };
                        report.resolved.insert(outpoint, resolution);
                        all_final &= self.buried(height, &tip);
                    }
                    (Fate::Claim { claim, lock, deadline, penalty: is_penalty, .. }, None) => {
                        all_final = false;
                        if !lock.open(&tip) {
                            continue;
                        }
                        if *is_penalty {
                            penalty.push(o.out.clone());
                            penalty_deadline = *deadline;
                            continue;
                        }
                        match SweepInput::from_output(a.txid, &o.out, a.delay, a.revocation_hash, *claim) {
                            Ok(input) => claims.push((vec![input], *deadline, false)),
                            Err(_) => continue,
                        }
                    }
                    (Fate::NotOurs, _) => {}
                }
            }
            report.final_ = all_final;
        }
        for (offerer, id, r) in learned {
            // Kept, and journaled: R stays known if its transaction leaves
            // the chain.
            if let alloc::collections::btree_map::Entry::Vacant(e) = self.state.preimages.entry(r.hash()) {
                e.insert(r);
                self.append(super::persist::Entry::Update(super::MonitorUpdate::Preimage(r)));
            }
            if report.learned.insert(r.hash()) {
                self.event(MonitorEvent::PreimageLearned { offerer, id, preimage: r });
            }
        }
        if let (Some(a), false) = (&analysis, report.final_) {
            if !penalty.is_empty() {
                let preimage = match a.kind {
                    SpendKind::RevokedCommitment { number } => {
                        self.state.secrets.preimage(RevocationSecrets::index(number))
                    }
                    _ => None,
                };
                if let Some(preimage) = preimage {
                    self.punish(a, &penalty, preimage, penalty_deadline, tip, &mut report);
                }
            }
            for (inputs, deadline, _) in claims {
                self.claim(inputs, deadline, tip, &mut report);
            }
        }
        self.report(report);
    }

    /// `R` if the input of `txid` spending `outpoint` reveals the preimage
    /// of `r_hash`.
    fn revealed(&self, txid: Txid, outpoint: OutPoint, r_hash: &sha256::Hash) -> Option<Preimage> {
        let c = self.state.confirmed.iter().find(|c| c.txid == txid)?;
        let input = c.tx.input.iter().find(|i| i.previous_output == outpoint)?;
        let secret = input.witness.nth(1)?;
        let r = Preimage(secret.try_into().ok()?);
        (r.hash() == *r_hash).then_some(r)
    }

    /// Penalty transactions for the revoked outputs still unspent (C1-e,
    /// R6.1-b, R6.1-c).
    fn punish(
        &mut self,
        a: &Analysis,
        outputs: &[CommitmentOutput],
        preimage: Preimage,
        deadline: Option<u32>,
        tip: Tip,
        report: &mut Report,
    ) {
        let rate = self.rate_for(deadline, tip.height);
        let key = (0, outputs.iter().map(|o| OutPoint { txid: a.txid, vout: o.vout }).collect());
        if let Some((r, txs)) = self.signed.get(&key) {
            if *r == rate {
                self.broadcasts.extend(txs.iter().cloned());
                return;
            }
        }
        let destination = self.config.destination.clone();
        // The outputs were recognised with this preimage's hash, so the
        // builder cannot refuse them.
        if let Ok(p) = build_penalty_from(a.txid, outputs, a.delay, preimage, destination, rate, &*self.signer) {
            self.broadcasts.extend(p.txs.iter().cloned());
            // A batch the signer failed is tried again at the next input.
            if p.failed.is_empty() {
                self.signed.insert(key, (rate, p.txs));
            }
            // An output not worth its input at this rate is claimed on its
            // own at the most it can pay, or reported (D13).
            for (outpoint, _, _) in p.uneconomical {
                let out = outputs.iter().find(|o| o.vout == outpoint.vout).expect("one of the outputs given");
                let claim = Claim::Revocation(preimage);
                if let Ok(input) = SweepInput::from_output(a.txid, out, a.delay, a.revocation_hash, claim) {
                    self.claim(vec![input], deadline, tip, report);
                }
            }
        }
    }

    /// One claim, at the rate its deadline asks, never above what it claims.
    fn claim(&mut self, inputs: Vec<SweepInput>, deadline: Option<u32>, tip: Tip, report: &mut Report) {
        let mut rate = self.rate_for(deadline, tip.height);
        let key = (claim_tag(&inputs), inputs.iter().map(SweepInput::outpoint).collect::<Vec<_>>());
        if let Some((r, txs)) = self.signed.get(&key) {
            if *r == rate {
                self.broadcasts.extend(txs.iter().cloned());
                return;
            }
        }
        let destination = self.config.destination.clone();
        let mut result = build_sweep(inputs.clone(), destination.clone(), rate, &*self.signer);
        if let Err(SweepError::NotWorthSweeping { total, fee }) = result {
            // D13: never above the value claimed. The highest rate that
            // leaves more than dust, if it still relays.
            let keep = total.checked_sub(crate::fees::DUST_LIMIT + Amount::from_sat(1)).unwrap_or(Amount::ZERO);
            let affordable =
                FeeRate::from_sat_per_kwu(rate.to_sat_per_kwu().saturating_mul(keep.to_sat()) / fee.to_sat().max(1));
            if affordable >= FeeRate::from_sat_per_vb_u32(1) {
                rate = affordable;
                result = build_sweep(inputs.clone(), destination, rate, &*self.signer);
            }
            if result.is_err() {
                let outpoint = key.1[0];
                if report.uneconomical.insert(outpoint) && !self.reported.uneconomical.contains(&outpoint) {
                    self.event(MonitorEvent::Uneconomical { outpoint, value: total, fee });
                }
                return;
            }
        }
        if let Ok(tx) = result {
            self.broadcasts.push_back(tx.clone());
            self.signed.insert(key, (rate, vec![tx]));
        }
    }

    fn report(&mut self, new: Report) {
        let old = core::mem::take(&mut self.reported);
        if old.spend != new.spend {
            // The same transaction may be classified anew (a revocation
            // arriving after it confirmed): that is no reorganisation.
            if let Some((txid, _)) = old.spend.filter(|(t, _)| new.spend.is_none_or(|(n, _)| n != *t)) {
                self.event(MonitorEvent::AnchorSpendReorged { txid });
            }
            if let (Some((txid, kind)), Some(c)) = (new.spend, self.state.anchor_spend()) {
                let height = c.height;
                self.event(MonitorEvent::AnchorSpent { txid, height, kind });
            }
        }
        for (outpoint, resolution) in &new.resolved {
            if old.resolved.get(outpoint) != Some(resolution) || old.spend != new.spend {
                let value = self.output_value(*outpoint).unwrap_or(Amount::ZERO);
                self.event(MonitorEvent::OutputResolved { outpoint: *outpoint, value, resolution: *resolution });
            }
        }
        for outpoint in new.unknown.difference(&old.unknown) {
            let value = self.output_value(*outpoint).unwrap_or(Amount::ZERO);
            self.event(MonitorEvent::OutputUnrecognised { outpoint: *outpoint, value });
        }
        if new.final_ && !old.final_ {
            self.event(MonitorEvent::Final);
        }
        self.reported = new;
    }

    fn output_value(&self, outpoint: OutPoint) -> Option<Amount> {
        let c = self.state.confirmed.iter().find(|c| c.txid == outpoint.txid)?;
        Some(c.tx.output.get(outpoint.vout as usize)?.value)
    }

    pub(super) fn event(&mut self, event: MonitorEvent) {
        self.events.push_back((self.seq, event));
    }

    /// What we own or may own on chain (C1-g). Before any spend of the
    /// anchor: our balance in our current commitment and its HTLCs; after:
    /// every output of ours not yet final, and every claim of ours not yet
    /// final. Their sum is what we own in the channel minus the fees paid on
    /// chain.
    pub fn balances(&self) -> Vec<Balance> {
        let s = &self.state;
        let Some(tip) = s.tip.or(Some(Tip { height: 0, hash: bitcoin::BlockHash::all_zeros(), time: 0 })) else {
            return Vec::new();
        };
        let final_depth = self.config.final_depth.max(1);
        let mut out = Vec::new();
        let Some(a) = self.analyse() else {
            let Some(ours) = s.ours else { return out };
            out.push(Balance::ClaimableOnChannelClose { amount: ours.to_local.to_sat_floor() });
            for h in s.candidates(Side::Local, ours.number) {
                let mine = h.direction == HtlcDirection::Offered || s.preimage_for(&h.r_hash).is_some();
                if mine && !crate::fees::htlc_is_dust(h.amount) {
                    out.push(Balance::Contested {
                        outpoint: None,
                        amount: h.amount.to_sat_floor(),
                        timeout_height: expiry_height(h.expiry, &tip),
                    });
                }
            }
            return out;
        };
        let mut claims_seen = BTreeSet::new();
        for o in &a.outs {
            let outpoint = OutPoint { txid: a.txid, vout: o.out.vout };
            let amount = o.out.value;
            match (&o.fate, o.spent) {
                (Fate::NotOurs, _) => {}
                (Fate::Wallet, _) => {
                    let final_height = a.height.saturating_add(final_depth - 1);
                    if tip.height < final_height {
                        out.push(Balance::AwaitingConfirmations { outpoint, amount, final_height });
                    }
                }
                (Fate::Claim { .. }, Some((txid, height, true))) => {
                    let final_height = height.saturating_add(final_depth - 1);
                    if tip.height < final_height && claims_seen.insert(txid) {
                        let c = s.confirmed.iter().find(|c| c.txid == txid).expect("spender is confirmed");
                        for (vout, o) in c.tx.output.iter().enumerate() {
                            let outpoint = OutPoint { txid, vout: vout as u32 };
                            out.push(Balance::AwaitingConfirmations { outpoint, amount: o.value, final_height });
                        }
                    }
                }
                (Fate::Claim { .. }, Some(_)) => {}
                (Fate::Claim { lock, contested, .. }, None) => out.push(match contested {
                    Some(timeout_height) => {
                        Balance::Contested { outpoint: Some(outpoint), amount, timeout_height: *timeout_height }
                    }
                    None if lock.open(&tip) => Balance::ClaimableNow { outpoint, amount },
                    None => Balance::ClaimableAt { outpoint, amount, height: lock.height_estimate(&tip) },
                }),
            }
        }
        out
    }
}

/// Tells claims of one output by different paths apart in the cache.
fn claim_tag(inputs: &[SweepInput]) -> u8 {
    match inputs.first().map(SweepInput::claim) {
        Some(Claim::DelayedToSelf) => 1,
        Some(Claim::Success(_)) => 2,
        Some(Claim::Timeout) => 3,
        Some(Claim::Revocation(_)) => 4,
        None => 5,
    }
}

fn owner_of(kind: SpendKind) -> Side {
    match kind {
        SpendKind::OurCommitment { .. } => Side::Local,
        _ => Side::Remote,
    }
}
