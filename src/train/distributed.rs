//! Data parallelism over the processes of [`comm::world`], as the official code runs under
//! DistributedDataParallel: `--batch-size` is the global batch and each of the `world` ranks
//! takes `batch / world` of it (its shard of the one global permutation, see
//! [`crate::data::loader`]); keys are all-gathered for the loss and BatchNorm statistics are
//! summed over ranks inside the layers (the engine's communicator does both); here, what the
//! training loop adds: rank 0's weights broadcast at start, gradients averaged over ranks before
//! the optimiser (in buckets, in the parameters' fixed order, so the result never depends on
//! timing), and checks that every rank runs the same configuration and holds the same weights.
//! With one process every function here is a no-op.

use crate::engine::comm;
use crate::moco::MoCo;
use crate::nn::Param;
use crate::optim::Optimizer;
use anyhow::{bail, Result};

/// Floats per gradient all-reduce (16 MiB): large enough to reach the link's bandwidth, small
/// enough to bound the extra memory.
pub const BUCKET: usize = 4 << 20;

/// This rank's share of the global batch; an error when the batch does not split evenly.
pub fn local_batch(global: usize) -> Result<usize> {
    let w = comm::world().world();
    if !global.is_multiple_of(w) || global < w {
        bail!(
            "batch_size = {global} does not split over {w} processes: the global batch must be a multiple of the \
             number of processes (e.g. {})",
            (global / w).max(1) * w
        );
    }
    Ok(global / w)
}

/// Gradients ← their mean over the ranks, in buckets of [`BUCKET`] floats taken in `params`'
/// order (the same on every rank). Every rank ends with the same bits (the communicator's sum is
/// one sum, sent to all).
pub fn average_grads(params: &mut [&mut Param], bucket: &mut Vec<f32>) {
    let c = comm::world();
    if c.world() == 1 {
        return;
    }
    let scale = 1.0 / c.world() as f32;
    let mut pending: Vec<(usize, usize, usize)> = Vec::new();
    bucket.clear();
    for pi in 0..params.len() {
        let n = params[pi].g.len();
        let mut off = 0;
        while off < n {
            let take = (BUCKET - bucket.len()).min(n - off);
            bucket.extend_from_slice(&params[pi].g[off..off + take]);
            pending.push((pi, off, take));
            off += take;
            if bucket.len() == BUCKET {
                flush(params, bucket, &mut pending, scale);
            }
        }
    }
    flush(params, bucket, &mut pending, scale);
}

fn flush(params: &mut [&mut Param], bucket: &mut Vec<f32>, pending: &mut Vec<(usize, usize, usize)>, scale: f32) {
    if bucket.is_empty() {
        return;
    }
    comm::world().all_reduce_sum(bucket);
    let mut at = 0;
    for (pi, off, len) in pending.drain(..) {
        for (d, s) in params[pi].g[off..off + len].iter_mut().zip(&bucket[at..at + len]) {
            *d = s * scale;
        }
        at += len;
    }
    bucket.clear();
}

/// The mean of a per-rank scalar (the loss) over the ranks.
pub fn mean_over_ranks(v: f32) -> f32 {
    let c = comm::world();
    if c.world() == 1 {
        return v;
    }
    let mut b = [v];
    c.all_reduce_sum(&mut b);
    b[0] / c.world() as f32
}

/// Every rank's rows of `features` (`[n, d]`) and their dataset indices, in rank order: the
/// global batch, as one process would see it (the kNN monitor's queue takes it).
pub fn gather_batch(features: &[f32], ids: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let c = comm::world();
    let w = c.world();
    let mut f = vec![0.0f32; features.len() * w];
    c.all_gather(&mut f, features);
    let local: Vec<u8> = ids.iter().flat_map(|&i| (i as u64).to_le_bytes()).collect();
    let mut all = vec![0u8; local.len() * w];
    c.all_gather_bytes(&mut all, &local);
    let ids = all.chunks(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize).collect();
    (f, ids)
}

/// Every tensor of the model (both encoders, the predictor, the BN buffers) ← rank 0's.
pub fn broadcast_model(model: &mut MoCo) {
    let c = comm::world();
    if c.world() > 1 {
        model.visit_tensors(&mut |_, _, v| c.broadcast(v, 0));
    }
}

/// A 64-bit fingerprint of bytes (FNV-1a over 32-bit words; not cryptographic).
pub fn fingerprint_words(h: u64, words: impl Iterator<Item = u32>) -> u64 {
    words.fold(h, |h, w| (h ^ w as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A fingerprint of every tensor of the model and of the optimiser's state.
pub fn weights_fingerprint(model: &mut MoCo, opt: &mut Optimizer) -> u64 {
    let mut h = FNV_START;
    model.visit_tensors(&mut |_, _, v| h = fingerprint_words(h, v.iter().map(|x| x.to_bits())));
    for (_, state) in opt.state_mut() {
        for v in state.iter() {
            h = fingerprint_words(h, v.iter().map(|x| x.to_bits()));
        }
    }
    fingerprint_words(h, [opt.steps() as u32, (opt.steps() >> 32) as u32].into_iter())
}

/// A fingerprint of a run's settings as text and of this build (its version and features).
pub fn config_fingerprint(settings: &str) -> u64 {
    let build = format!("{} mpi={}", env!("CARGO_PKG_VERSION"), cfg!(feature = "mpi"));
    let text = format!("{build}\n{settings}");
    fingerprint_words(FNV_START, text.bytes().map(u32::from))
}

/// An error unless every rank passes the same `value` for `what` (every rank gets the same
/// answer, so all stop together).
pub fn same_on_every_rank(what: &str, value: u64) -> Result<()> {
    let c = comm::world();
    if c.world() == 1 {
        return Ok(());
    }
    let mut all = vec![0u8; 8 * c.world()];
    c.all_gather_bytes(&mut all, &value.to_le_bytes());
    let vals: Vec<u64> = all.chunks(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect();
    if vals.iter().any(|&v| v != vals[0]) {
        let list: Vec<String> = vals.iter().enumerate().map(|(r, v)| format!("rank {r}: {v:016x}")).collect();
        bail!(
            "the {} processes differ in {what} ({}); every rank must run the same build and settings",
            c.world(),
            list.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_is_a_no_op() {
        assert_eq!(local_batch(16).unwrap(), 16);
        assert_eq!(mean_over_ranks(2.5), 2.5);
        let mut p = Param::zeros("w", &[3], crate::nn::ParamKind::Weight);
        p.g.copy_from_slice(&[1.0, 2.0, 3.0]);
        average_grads(&mut [&mut p], &mut Vec::new());
        assert_eq!(&p.g[..], &[1.0, 2.0, 3.0]);
        same_on_every_rank("settings", 42).unwrap();
    }

    #[test]
    fn fingerprints_see_every_bit() {
        let a = config_fingerprint("lr = 1.5e-4");
        assert_eq!(a, config_fingerprint("lr = 1.5e-4"));
        assert_ne!(a, config_fingerprint("lr = 1.6e-4"));
        let w = |x: f32| fingerprint_words(FNV_START, [x.to_bits()].into_iter());
        assert_ne!(w(0.0), w(-0.0));
    }
}
