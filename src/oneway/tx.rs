//! The one-way channel's transactions (ruling E2): the channel output, its
//! cooperative spend (a payment, M3-b, closed by the merchant, M4-a) and the
//! client's refund after `T` (M4-d); the announce and payment PSBTs
//! (messages \[3\] and \[6\]); Bitcoin Core's dust threshold and standard output
//! types, which the merchant's checks (M3-c) and E6 use.
//!
//! Every signature is `SIGHASH_ALL`, low-S, over input 0, which spends the
//! channel: BIP 143 with the channel script as `scriptCode` for P2WSH, the
//! legacy digest with the redeem script for P2SH. Everything here is built
//! from untrusted input too (the merchant reads the client's PSBTs), so no
//! function indexes without checking and no input panics.
//! `docs/oneway-transactions.md` specifies every byte.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::BTreeMap;

use bitcoin::opcodes::all::{OP_PUSHBYTES_0, OP_PUSHNUM_1};
use bitcoin::psbt::{self, Psbt, PsbtSighashType};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Amount, CompressedPublicKey, FeeRate, OutPoint, Script, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid, Witness,
};

use super::script::{ChannelScript, OutputKind};
use crate::tx::sign::{self, witness_sig, KeyRole, Sighash, Signer, SignerError, SigningInput, VerifyError};

/// `nSequence` of the refund's input: below `0xFFFFFFFE`, so it signals
/// replace-by-fee (BIP 125), and not `0xFFFFFFFF`, so `nLockTime` and with it
/// `OP_CHECKLOCKTIMEVERIFY` are enforced (BIP 65).
pub const REFUND_SEQUENCE: Sequence = Sequence(0xFFFF_FFFD);

/// The size the fee of every transaction here is computed with for each
/// signature: the longest strict-DER ECDSA signature (72 bytes) plus the
/// sighash byte. Real low-S signatures are at most 72 bytes with the sighash
/// byte, so the real fee rate is never below the one asked for.
pub const MAX_SIGNATURE_SIZE: usize = 73;

/// Bitcoin Core's default `-dustrelayfee`: 3 sat/vB (3000 sat/kvB).
pub const DEFAULT_DUST_RELAY_FEE: FeeRate = FeeRate::from_sat_per_vb_u32(3);

/// The dust rule of the chain the channel lives on (ruling E1: policy
/// numbers are configuration).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DustPolicy {
    /// Bitcoin Core's `-dustrelayfee` (default [`DEFAULT_DUST_RELAY_FEE`]).
    pub dust_relay_fee: FeeRate,
}

impl Default for DustPolicy {
    fn default() -> Self {
        DustPolicy { dust_relay_fee: DEFAULT_DUST_RELAY_FEE }
    }
}

/// Bitcoin Core's `GetDustThreshold` (`policy/policy.cpp`): an output below
/// this is dust, and a transaction with one is not relayed.
///
/// 0 for an unspendable script (starting with `OP_RETURN`, or longer than
/// 10,000 bytes); otherwise the fee at `dust_relay_fee` for the output's
/// serialized size (8 + compact size + script) plus the size of an input
/// spending it: 148 bytes, or 67 virtual bytes for a witness program.
/// `CFeeRate::GetFee` rounds up and charges at least 1 sat at a non-zero
/// rate. At 3 sat/vB: P2PKH 546, P2SH 540, P2WPKH 294, P2WSH and P2TR 330.
pub fn dust_threshold(script_pubkey: &Script, policy: &DustPolicy) -> Amount {
    const MAX_SCRIPT_SIZE: usize = 10_000;
    if script_pubkey.is_op_return() || script_pubkey.len() > MAX_SCRIPT_SIZE {
        return Amount::ZERO;
    }
    let spend = if script_pubkey.is_witness_program() { 32 + 4 + 1 + 107 / 4 + 4 } else { 32 + 4 + 1 + 107 + 4 };
    let size = (8 + compact_size_len(script_pubkey.len()) + script_pubkey.len() + spend) as u128;
    let per_kvb = u128::from(policy.dust_relay_fee.to_sat_per_kwu()) * 4;
    let mut fee = (per_kvb * size).div_ceil(1000);
    if fee == 0 && per_kvb > 0 {
        fee = 1;
    }
    Amount::from_sat(u64::try_from(fee).unwrap_or(u64::MAX))
}

/// Whether a payout script is of a type every node relays and this protocol
/// accepts in a payment (M3-c): P2PKH, P2SH, P2WPKH, P2WSH or P2TR. Bare
/// multisig, `OP_TRUE`, `OP_RETURN` and unknown witness versions are not.
pub fn is_standard_payout(script_pubkey: &Script) -> bool {
    script_pubkey.is_p2pkh()
        || script_pubkey.is_p2sh()
        || script_pubkey.is_p2wpkh()
        || script_pubkey.is_p2wsh()
        || script_pubkey.is_p2tr()
}

fn compact_size_len(n: usize) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// The fee at `rate` for `vsize` virtual bytes, rounded up: `None` on
/// overflow.
fn fee_for(rate: FeeRate, vsize: usize) -> Option<Amount> {
    let fee = (u128::from(rate.to_sat_per_kwu()) * 4).checked_mul(vsize as u128)?.div_ceil(1000);
    u64::try_from(fee).ok().map(Amount::from_sat)
}

/// A push of `data` (at most 520 bytes here: a signature or the script).
fn push(builder: Builder, data: &[u8]) -> Builder {
    builder.push_slice(PushBytesBuf::try_from(data.to_vec()).expect("signatures and the script are far below 4 GiB"))
}

/// The channel output, funded and (for the merchant) confirmed: where it
/// is, what it holds, the script and how the output commits to it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChannelOutput {
    /// The funding outpoint (E7: one per channel).
    pub outpoint: OutPoint,
    /// What it holds: the channel's capacity.
    pub value: Amount,
    /// The E2 script.
    pub script: ChannelScript,
    /// P2WSH or P2SH (E1).
    pub kind: OutputKind,
}

impl ChannelOutput {
    /// A final version-2 transaction whose one input spends the channel
    /// (nSequence 0xFFFFFFFF, nLockTime 0, no signature yet) and pays
    /// `outputs`: the shape of every payment (M3-b) and of the announce.
    pub fn spending(&self, outputs: Vec<TxOut>) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: self.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: outputs,
        }
    }

    /// The output the funding transaction pays (M1-c).
    pub fn txout(&self) -> TxOut {
        TxOut { value: self.value, script_pubkey: self.script.script_pubkey(self.kind) }
    }

    /// E5: nothing above 21,000,000 BTC.
    fn check_capacity(&self) -> Result<(), TxError> {
        if self.value > Amount::MAX_MONEY {
            return Err(TxError::CapacityAboveMaxMoney(self.value));
        }
        Ok(())
    }

    /// Input 0 of `tx` exists and spends the channel.
    fn check_input(&self, tx: &Transaction) -> Result<(), TxError> {
        let input = tx.input.first().ok_or(TxError::NoInput)?;
        if input.previous_output != self.outpoint {
            return Err(TxError::WrongInput { expected: self.outpoint, found: input.previous_output });
        }
        Ok(())
    }

    /// The `SIGHASH_ALL` digest of input 0 of `tx`, which must spend the
    /// channel: BIP 143 with the channel script as `scriptCode` and the
    /// channel's value (P2WSH), or the legacy digest with the redeem script
    /// (P2SH).
    pub fn sighash(&self, tx: &Transaction) -> Result<Sighash, TxError> {
        self.check_input(tx)?;
        let script = self.script.to_script();
        match self.kind {
            OutputKind::P2wsh => SighashCache::new(tx)
                .p2wsh_signature_hash(0, &script, self.value, EcdsaSighashType::All)
                .map(Sighash::SegwitV0)
                .map_err(|_| TxError::NoInput),
            OutputKind::P2sh => SighashCache::new(tx)
                .legacy_signature_hash(0, &script, EcdsaSighashType::All.to_u32())
                .map(Sighash::Legacy)
                .map_err(|_| TxError::NoInput),
        }
    }

    /// `signer`'s signature on input 0 of `tx` with the key for `role`,
    /// which must be one of the script's two keys. Low-S whatever the
    /// signer returned, and checked before it is returned.
    pub fn sign(&self, tx: &Transaction, signer: &dyn Signer, role: KeyRole) -> Result<Signature, TxError> {
        let key = signer.public_key(role);
        if key != self.script.client() && key != self.script.merchant() {
            return Err(TxError::NotAChannelKey(key));
        }
        let sighash = self.sighash(tx)?;
        let script = self.script.to_script();
        let sig = sign::low_s(signer.sign(&SigningInput {
            tx,
            input_index: 0,
            script: &script,
            value: self.value,
            sighash,
            role,
        }))?;
        sign::verify(sighash, &key, &sig)?;
        Ok(sig)
    }

    /// Checks `sig` by `key`, which must be one of the script's two keys,
    /// on input 0 of `tx`. High-S signatures do not verify.
    pub fn verify(&self, tx: &Transaction, key: &CompressedPublicKey, sig: &Signature) -> Result<(), TxError> {
        if *key != self.script.client() && *key != self.script.merchant() {
            return Err(TxError::NotAChannelKey(*key));
        }
        let sighash = self.sighash(tx)?;
        Ok(sign::verify(sighash, key, sig)?)
    }

    /// The scriptSig and witness of the cooperative (2-of-2) spend with
    /// these encoded signatures (DER + sighash byte).
    fn cooperative_spend(&self, sig_a: &[u8], sig_b: &[u8]) -> (ScriptBuf, Witness) {
        let script = self.script.to_script();
        match self.kind {
            OutputKind::P2wsh => {
                let mut w = Witness::new();
                w.push([]); // the OP_CHECKMULTISIG dummy (NULLDUMMY)
                w.push(sig_a);
                w.push(sig_b);
                w.push([]); // OP_IF's selector: false, the 2-of-2 branch (MINIMALIF)
                w.push(script.as_bytes());
                (ScriptBuf::new(), w)
            }
            OutputKind::P2sh => {
                let b = Builder::new().push_opcode(OP_PUSHBYTES_0);
                let b = push(push(b, sig_a), sig_b).push_opcode(OP_PUSHBYTES_0);
                (push(b, script.as_bytes()).into_script(), Witness::new())
            }
        }
    }

    /// The scriptSig and witness of the refund with this encoded signature.
    fn refund_spend(&self, sig_a: &[u8]) -> (ScriptBuf, Witness) {
        let script = self.script.to_script();
        match self.kind {
            OutputKind::P2wsh => {
                let mut w = Witness::new();
                w.push(sig_a);
                w.push([1]); // OP_IF's selector: true, the refund branch (MINIMALIF)
                w.push(script.as_bytes());
                (ScriptBuf::new(), w)
            }
            OutputKind::P2sh => {
                let b = push(Builder::new(), sig_a).push_opcode(OP_PUSHNUM_1);
                (push(b, script.as_bytes()).into_script(), Witness::new())
            }
        }
    }

    /// Puts the cooperative spend into input 0 of `tx`: witness
    /// `[<>, sigA, sigB, <>, script]` (P2WSH) or scriptSig
    /// `OP_0 <sigA> <sigB> OP_0 <script>` (P2SH), each signature DER plus
    /// `SIGHASH_ALL`. A transaction without inputs is left as it is.
    pub fn finalize_cooperative(&self, tx: &mut Transaction, client_sig: &Signature, merchant_sig: &Signature) {
        let (script_sig, witness) = self.cooperative_spend(&witness_sig(client_sig), &witness_sig(merchant_sig));
        if let Some(input) = tx.input.first_mut() {
            input.script_sig = script_sig;
            input.witness = witness;
        }
    }

    /// The virtual size `tx` will have once input 0 carries the
    /// cooperative spend with two [`MAX_SIGNATURE_SIZE`]-byte signatures:
    /// the size every payment's fee is computed on (M3-b, M3-d). For P2SH
    /// (no witness) that is the plain size. A transaction without inputs is
    /// measured as it is.
    pub fn finalized_size(&self, tx: &Transaction) -> usize {
        let placeholder = [0u8; MAX_SIGNATURE_SIZE];
        let (script_sig, witness) = self.cooperative_spend(&placeholder, &placeholder);
        measure(tx, script_sig, witness)
    }

    /// Like [`ChannelOutput::finalized_size`], for the refund's spend.
    fn refund_size(&self, tx: &Transaction) -> usize {
        let (script_sig, witness) = self.refund_spend(&[0u8; MAX_SIGNATURE_SIZE]);
        measure(tx, script_sig, witness)
    }

    /// The client's refund (E2, M4-d) with Bitcoin Core's default dust
    /// policy: see [`ChannelOutput::refund_with_policy`].
    pub fn refund(
        &self,
        destination: ScriptBuf,
        fee_rate: FeeRate,
        signer: &dyn Signer,
        role: KeyRole,
    ) -> Result<Transaction, TxError> {
        self.refund_with_policy(destination, fee_rate, signer, role, &DustPolicy::default())
    }

    /// The client's refund (E2, M4-d), signed by `signer`'s key for `role`,
    /// which must be the client's: version 2, `nLockTime` = `T`, one input
    /// spending the channel with `nSequence` [`REFUND_SEQUENCE`] and witness
    /// `[sigA, 01, script]` (P2WSH) or scriptSig `<sigA> OP_1 <script>`
    /// (P2SH), one output of the whole capacity less the fee to
    /// `destination`. The fee is at `fee_rate` on the final virtual size
    /// with a [`MAX_SIGNATURE_SIZE`]-byte signature. An output below
    /// `destination`'s dust threshold is an error. Consensus refuses it in a
    /// block before height `T`.
    pub fn refund_with_policy(
        &self,
        destination: ScriptBuf,
        fee_rate: FeeRate,
        signer: &dyn Signer,
        role: KeyRole,
        dust: &DustPolicy,
    ) -> Result<Transaction, TxError> {
        self.check_capacity()?;
        if !is_standard_payout(&destination) {
            return Err(TxError::NonStandardDestination(destination));
        }
        let key = signer.public_key(role);
        if key != self.script.client() {
            return Err(TxError::NotTheClient(key));
        }
        let mut tx = self.spending(vec![TxOut { value: Amount::ZERO, script_pubkey: destination }]);
        tx.lock_time = absolute::LockTime::Blocks(self.script.locktime());
        tx.input[0].sequence = REFUND_SEQUENCE;
        let size = self.refund_size(&tx);
        let fee = fee_for(fee_rate, size).ok_or(TxError::FeeOverflow { fee_rate, size })?;
        let value = self.value.checked_sub(fee).ok_or(TxError::InsufficientCapacity {
            total: Amount::ZERO,
            fee,
            capacity: self.value,
        })?;
        let output = tx.output.first_mut().expect("built with one output");
        let threshold = dust_threshold(&output.script_pubkey, dust);
        if value < threshold || value == Amount::ZERO {
            return Err(TxError::RefundBelowDust { value, threshold });
        }
        output.value = value;
        let sig = self.sign(&tx, signer, role)?;
        let (script_sig, witness) = self.refund_spend(&witness_sig(&sig));
        let input = tx.input.first_mut().expect("built with one input");
        input.script_sig = script_sig;
        input.witness = witness;
        Ok(tx)
    }

    /// The payment transaction of M3-b, unsigned: version 2, `nLockTime` 0,
    /// the channel input with `nSequence` 0xFFFFFFFF; output 0 pays `total`
    /// (cumulative, E5) to `payee`, output 1 the change to `change`, left
    /// out when it would be below its dust threshold (E6: it goes to the
    /// fee). The fee is at `fee_rate` on the finalised virtual size
    /// ([`ChannelOutput::finalized_size`]). Errors: a capacity or `total`
    /// above 21M BTC (E5), a non-standard `payee` or `change`, `change`
    /// equal to `payee`, `total` above the capacity, `total` plus the fee
    /// above it, `total` below `payee`'s dust threshold, and overflow.
    pub fn payment_tx(
        &self,
        payee: ScriptBuf,
        total: Amount,
        change: ScriptBuf,
        fee_rate: FeeRate,
        dust: &DustPolicy,
    ) -> Result<Transaction, TxError> {
        self.check_capacity()?;
        if total > Amount::MAX_MONEY {
            return Err(TxError::TotalAboveMaxMoney(total));
        }
        if !is_standard_payout(&payee) {
            return Err(TxError::NonStandardPayee(payee));
        }
        if !is_standard_payout(&change) {
            return Err(TxError::NonStandardChange(change));
        }
        if change == payee {
            return Err(TxError::ChangeIsPayee);
        }
        if total > self.value {
            return Err(TxError::TotalAboveCapacity { total, capacity: self.value });
        }
        let threshold = dust_threshold(&payee, dust);
        if total < threshold || total == Amount::ZERO {
            return Err(TxError::PayeeBelowDust { value: total, threshold });
        }
        let mut tx = self.spending(vec![TxOut { value: total, script_pubkey: payee }]);
        // Without change: the least the payment can cost.
        let size = self.finalized_size(&tx);
        let fee = fee_for(fee_rate, size).ok_or(TxError::FeeOverflow { fee_rate, size })?;
        let needed = total.checked_add(fee).ok_or(TxError::FeeOverflow { fee_rate, size })?;
        if needed > self.value {
            return Err(TxError::InsufficientCapacity { total, fee, capacity: self.value });
        }
        // With change, if what is left after the larger fee is not dust.
        let change_threshold = dust_threshold(&change, dust);
        tx.output.push(TxOut { value: Amount::ZERO, script_pubkey: change });
        let size = self.finalized_size(&tx);
        let fee = fee_for(fee_rate, size).ok_or(TxError::FeeOverflow { fee_rate, size })?;
        let rest = total.checked_add(fee).and_then(|spent| self.value.checked_sub(spent));
        match (rest, tx.output.last_mut()) {
            (Some(rest), Some(out)) if rest >= change_threshold && rest > Amount::ZERO => out.value = rest,
            _ => {
                tx.output.pop();
            }
        }
        Ok(tx)
    }

    /// The input map every PSBT of this channel carries: the funding
    /// transaction (checked against the outpoint), and for P2WSH the
    /// witness UTXO and witness script, for P2SH the redeem script.
    fn psbt_input(&self, funding_tx: &Transaction) -> Result<psbt::Input, TxError> {
        self.check_capacity()?;
        let found = funding_tx.compute_txid();
        if found != self.outpoint.txid {
            return Err(TxError::FundingTxid { expected: self.outpoint.txid, found });
        }
        let vout = self.outpoint.vout;
        let output = usize::try_from(vout).ok().and_then(|i| funding_tx.output.get(i));
        let output = output.ok_or(TxError::FundingVout { vout, outputs: funding_tx.output.len() })?;
        let expected = self.txout();
        if output.script_pubkey != expected.script_pubkey {
            return Err(TxError::FundingScript { vout });
        }
        if output.value != self.value {
            return Err(TxError::FundingValue { expected: self.value, found: output.value });
        }
        let script = self.script.to_script();
        let mut input = psbt::Input { non_witness_utxo: Some(funding_tx.clone()), ..Default::default() };
        match self.kind {
            OutputKind::P2wsh => {
                input.witness_utxo = Some(expected);
                input.witness_script = Some(script);
            }
            OutputKind::P2sh => input.redeem_script = Some(script),
        }
        Ok(input)
    }

    /// The announce PSBT (message \[3\], operation \[C\], M2-a, M2-b): one input
    /// spending the channel (`nSequence` 0xFFFFFFFF) in a version 2
    /// transaction with `nLockTime` 0 and no outputs, no signatures. The
    /// input carries `funding_tx` as `non_witness_utxo`, whose txid must be
    /// the outpoint's and whose output at the outpoint's index must be the
    /// channel output; for P2WSH also `witness_utxo` and `witness_script`,
    /// for P2SH `redeem_script`. Nothing else is set.
    pub fn announce_psbt(&self, funding_tx: &Transaction) -> Result<Psbt, TxError> {
        let input = self.psbt_input(funding_tx)?;
        let unsigned_tx = self.spending(vec![]);
        Ok(psbt_of(unsigned_tx, input))
    }

    /// The payment PSBT (message \[6\], operation \[F\], M3-b, M3-e): `tx` (one
    /// input, the channel's, with no scriptSig or witness) with the
    /// announce PSBT's input fields plus the client's signature in
    /// `partial_sigs` (DER + `SIGHASH_ALL`, under the client's key) and
    /// `sighash_type` ALL; one empty output map per output. The signature
    /// is checked first.
    pub fn payment_psbt(
        &self,
        funding_tx: &Transaction,
        tx: Transaction,
        client_sig: &Signature,
    ) -> Result<Psbt, TxError> {
        let mut input = self.psbt_input(funding_tx)?;
        if tx.input.len() != 1 {
            return Err(TxError::InputCount(tx.input.len()));
        }
        self.check_input(&tx)?;
        if tx.input.iter().any(|i| !i.script_sig.is_empty() || !i.witness.is_empty()) {
            return Err(TxError::SignedInput);
        }
        let client = self.script.client();
        self.verify(&tx, &client, client_sig)?;
        input.partial_sigs = BTreeMap::from([(client.into(), bitcoin::ecdsa::Signature::sighash_all(*client_sig))]);
        input.sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::All));
        Ok(psbt_of(tx, input))
    }
}

/// A PSBT of `unsigned_tx` (one input) with `input` as its input map and
/// one empty map per output.
fn psbt_of(unsigned_tx: Transaction, input: psbt::Input) -> Psbt {
    let outputs = vec![psbt::Output::default(); unsigned_tx.output.len()];
    Psbt {
        unsigned_tx,
        version: 0,
        xpub: BTreeMap::new(),
        proprietary: BTreeMap::new(),
        unknown: BTreeMap::new(),
        inputs: vec![input],
        outputs,
    }
}

/// The virtual size of `tx` with input 0's scriptSig and witness replaced.
fn measure(tx: &Transaction, script_sig: ScriptBuf, witness: Witness) -> usize {
    let mut tx = tx.clone();
    if let Some(input) = tx.input.first_mut() {
        input.script_sig = script_sig;
        input.witness = witness;
    }
    tx.vsize()
}

/// Why a one-way channel transaction or PSBT could not be built, signed or
/// checked.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The transaction has no input 0.
    #[error("the transaction has no input to spend the channel")]
    NoInput,
    /// Input 0 spends another outpoint.
    #[error("input 0 spends {found}, not the channel outpoint {expected}")]
    WrongInput {
        /// The channel's outpoint.
        expected: OutPoint,
        /// What input 0 spends.
        found: OutPoint,
    },
    /// A payment has more inputs than the channel's (E7).
    #[error("the transaction has {0} inputs, not the channel's one (E7)")]
    InputCount(usize),
    /// An input of a transaction to be put in a PSBT already carries a
    /// scriptSig or witness.
    #[error("an input already carries a scriptSig or witness: a PSBT holds an unsigned transaction")]
    SignedInput,
    /// The key asked to sign or checked against is neither of the
    /// script's two.
    #[error("key {0} is neither the client's nor the merchant's key of the channel script")]
    NotAChannelKey(CompressedPublicKey),
    /// The refund's signer is not the client.
    #[error("the refund must be signed by the client's key, not {0} (E2)")]
    NotTheClient(CompressedPublicKey),
    /// The signer failed.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// A signature does not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The channel holds more than 21,000,000 BTC (E5).
    #[error("capacity {0} is above 21000000 BTC (E5)")]
    CapacityAboveMaxMoney(Amount),
    /// The total is above 21,000,000 BTC (E5).
    #[error("total {0} is above 21000000 BTC (E5)")]
    TotalAboveMaxMoney(Amount),
    /// The total paid is more than the channel holds.
    #[error("total {total} is above the channel's capacity {capacity} (M3-b)")]
    TotalAboveCapacity {
        /// The total asked for.
        total: Amount,
        /// The channel's capacity.
        capacity: Amount,
    },
    /// The total (0 for a refund) and the fee are more than the channel
    /// holds.
    #[error("total {total} plus fee {fee} is above the channel's capacity {capacity} (M3-b)")]
    InsufficientCapacity {
        /// The total paid to the payee.
        total: Amount,
        /// The fee at the asked rate.
        fee: Amount,
        /// The channel's capacity.
        capacity: Amount,
    },
    /// The fee does not fit in an amount.
    #[error("fee at {fee_rate} for {size} vbytes overflows")]
    FeeOverflow {
        /// The rate asked for.
        fee_rate: FeeRate,
        /// The virtual size.
        size: usize,
    },
    /// The payee's output would be dust.
    #[error("payment of {value} is below the payee script's dust threshold {threshold}")]
    PayeeBelowDust {
        /// The total.
        value: Amount,
        /// The payee script's dust threshold.
        threshold: Amount,
    },
    /// The refund's only output would be dust.
    #[error("refund output of {value} after the fee is below the destination's dust threshold {threshold} (M4-d)")]
    RefundBelowDust {
        /// What is left after the fee.
        value: Amount,
        /// The destination's dust threshold.
        threshold: Amount,
    },
    /// The payee script is not a standard payout type.
    #[error("payee script {0} is not P2PKH, P2SH, P2WPKH, P2WSH or P2TR (M3-c)")]
    NonStandardPayee(ScriptBuf),
    /// The change script is not a standard payout type.
    #[error("change script {0} is not P2PKH, P2SH, P2WPKH, P2WSH or P2TR (M3-c)")]
    NonStandardChange(ScriptBuf),
    /// The refund destination is not a standard payout type.
    #[error("refund destination {0} is not P2PKH, P2SH, P2WPKH, P2WSH or P2TR")]
    NonStandardDestination(ScriptBuf),
    /// The change would go to the payee's script, so two outputs could pay
    /// it and the payment is ambiguous (M3-c: exactly one output pays the
    /// total).
    #[error("the change script is the payee's script (M3-c: exactly one output pays the total)")]
    ChangeIsPayee,
    /// The funding transaction is not the one the outpoint names (M2-b).
    #[error("funding transaction has txid {found}, not the outpoint's {expected} (M2-b)")]
    FundingTxid {
        /// The outpoint's txid.
        expected: Txid,
        /// The funding transaction's.
        found: Txid,
    },
    /// The funding transaction has no output at the outpoint's index
    /// (M2-b).
    #[error("funding transaction has {outputs} outputs, no output {vout} (M2-b)")]
    FundingVout {
        /// The outpoint's index.
        vout: u32,
        /// How many outputs there are.
        outputs: usize,
    },
    /// The funding output does not pay the channel script as its kind
    /// (M2-c).
    #[error("funding output {vout} does not pay the channel script (M2-c)")]
    FundingScript {
        /// The outpoint's index.
        vout: u32,
    },
    /// The funding output holds another value than the channel's (M2-e).
    #[error("funding output holds {found}, not the channel's {expected} (M2-e)")]
    FundingValue {
        /// The channel's value.
        expected: Amount,
        /// What the output holds.
        found: Amount,
    },
}
