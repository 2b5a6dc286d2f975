//! MoCo v3, readable as the paper's pseudocode:
//!
//! ```text
//! q1, q2 = f_q(x1), f_q(x2)          # backbone + projector + predictor
//! f_k = m·f_k + (1-m)·f_q            # EMA, before the keys, as the official forward does
//! k1, k2 = f_k(x1), f_k(x2)          # momentum backbone + projector, no gradient
//! loss = ctr(q1, k2) + ctr(q2, k1)   # ctr = 2τ · CE(norm(q)·norm(k)ᵀ/τ, diagonal)
//! loss.backward()
//! ```
//!
//! The two views travel through every network as one batch of 2N rows (x1 then x2). Nothing in
//! the ViT mixes rows, and every BatchNorm (heads, ResNet) normalises the two halves separately
//! (`groups = 2`), so this computes exactly what two separate passes compute, with larger matrix
//! products.
//!
//! The heads follow the backbone family as the official `MoCo_ViT` / `MoCo_ResNet`: for the ViT a
//! 3-layer projector `head` and a 2-layer predictor, both ending in a BatchNorm without affine;
//! for the ResNet a 2-layer projector `fc` (with the last BN) and a 2-layer predictor without it.

use crate::engine::rng::Rng;
use crate::engine::tensor::Tensor;
use crate::engine::{comm, ensure, ops};
use crate::models::backbone::{Backbone, BackboneConfig};
use crate::models::heads::Mlp;
use crate::nn::{Buffer, Module, Param};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MocoConfig {
    pub backbone: BackboneConfig,
    /// Hidden width of the projector and predictor MLPs (official 4096).
    pub mlp_dim: usize,
    /// Output width of projector and predictor (official 256).
    pub out_dim: usize,
    /// Temperature τ (official ViT recipe 0.2, ResNet 1.0).
    pub t: f32,
}

impl MocoConfig {
    /// A lower bound on the values a checkpoint of this model holds (both encoders' blocks and
    /// heads, the predictor), computed without building it: what a reader checks against the
    /// file's length before it allocates the model.
    pub fn min_floats(&self) -> u128 {
        let (d, h, o) = (self.backbone.dim() as u128, self.mlp_dim as u128, self.out_dim as u128);
        // Per encoder the projector (d → h … → o); the predictor (o → h → o) once.
        let projector = d * h + h * o;
        let body = match self.backbone.vit() {
            Some(v) => {
                let tokens = (v.img / v.patch.max(1)) as u128;
                v.depth as u128 * 12 * d * d + tokens * tokens * d
            }
            None => 0,
        };
        2 * (body + projector) + 2 * h * o
    }

    /// Layers of the projector, and whether the predictor ends in a BatchNorm.
    fn heads(&self) -> (usize, bool) {
        match self.backbone {
            BackboneConfig::Vit(_) => (3, true),
            BackboneConfig::ResNet(_) => (2, false),
        }
    }
}

/// Backbone + projector: the base encoder without its predictor, and the momentum encoder.
/// The projector keeps its official name: `head` for the ViT, `fc` for the ResNet
/// (`base_encoder.head.*`, `base_encoder.fc.*`).
pub struct Encoder {
    pub backbone: Backbone,
    pub head: Mlp,
    dfeat: Tensor,
}

impl Encoder {
    fn new(cfg: &MocoConfig, rng: &mut Rng) -> Encoder {
        let backbone = Backbone::new(&cfg.backbone, rng);
        let name = cfg.backbone.head_name();
        let head = Mlp::new(name, cfg.heads().0, cfg.backbone.dim(), cfg.mlp_dim, cfg.out_dim, true, rng);
        Encoder { backbone, head, dfeat: Tensor::new() }
    }

    fn forward(&mut self, x: &[f32], images: usize, groups: usize) -> &[f32] {
        let feat = self.backbone.forward(x, images, groups);
        self.head.forward(feat, images, groups)
    }

    fn backward(&mut self, dz: &[f32], images: usize) {
        let d = self.backbone.dim();
        ensure(&mut self.dfeat, images * d);
        let feat = self.backbone.output(images);
        self.head.backward(feat, dz, images, &mut self.dfeat[..images * d]);
        self.backbone.backward(&self.dfeat[..images * d], images);
    }
}

impl Module for Encoder {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        self.backbone.visit(f);
        self.head.visit(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        self.backbone.visit_buffers(f);
        self.head.visit_buffers(f);
    }
}

/// A callback given each named tensor: its key, its shape and its data (which it may change).
pub type TensorVisitor<'a> = dyn FnMut(String, &[usize], &mut Vec<f32>) + 'a;

pub struct MoCo {
    pub cfg: MocoConfig,
    pub base: Encoder,
    pub momentum: Encoder,
    pub predictor: Mlp,
    q: Tensor,
    k: Tensor,
    dq: Tensor,
    dz: Tensor,
    ctr: Contrastive,
}

impl MoCo {
    pub fn new(cfg: &MocoConfig, seed: u64) -> MoCo {
        let mut rng = Rng::new(seed);
        let mut base = Encoder::new(cfg, &mut rng);
        let predictor = Mlp::new("predictor", 2, cfg.out_dim, cfg.mlp_dim, cfg.out_dim, cfg.heads().1, &mut rng);
        // The momentum encoder starts as an exact copy of the base encoder, all frozen.
        let mut momentum = Encoder::new(cfg, &mut rng);
        momentum.backbone.set_keep_activations(false);
        for (pk, pq) in momentum.params_mut().into_iter().zip(base.params_mut()) {
            pk.w.copy_from_slice(&pq.w);
            pk.trainable = false;
        }
        MoCo {
            cfg: cfg.clone(),
            base,
            momentum,
            predictor,
            q: Tensor::new(),
            k: Tensor::new(),
            dq: Tensor::new(),
            dz: Tensor::new(),
            ctr: Contrastive::default(),
        }
    }

    /// One MoCo v3 forward and backward on `x` = [x1; x2] (2N images, CHW each), with momentum
    /// `m` for this step's EMA. Leaves the gradients in the base encoder and predictor; the
    /// optimiser step is the caller's. Returns the loss.
    pub fn forward_backward(&mut self, x: &[f32], n: usize, m: f64) -> f32 {
        let (two_n, dim) = (2 * n, self.cfg.out_dim);
        // q1, q2 = f_q(x1), f_q(x2)
        let z = self.base.forward(x, two_n, 2);
        let q = self.predictor.forward(z, two_n, 2);
        ensure(&mut self.q, two_n * dim);
        self.q[..two_n * dim].copy_from_slice(q);
        // f_k = m·f_k + (1-m)·f_q, then k1, k2 = f_k(x1), f_k(x2)
        self.momentum_update(m);
        let k = self.momentum.forward(x, two_n, 2);
        ensure(&mut self.k, two_n * dim);
        self.k[..two_n * dim].copy_from_slice(k);
        // loss = ctr(q1, k2) + ctr(q2, k1)
        ensure(&mut self.dq, two_n * dim);
        let (q1, q2) = self.q[..two_n * dim].split_at(n * dim);
        let (k1, k2) = self.k[..two_n * dim].split_at(n * dim);
        let (dq1, dq2) = self.dq[..two_n * dim].split_at_mut(n * dim);
        let t = self.cfg.t;
        let loss =
            self.ctr.forward_backward(q1, k2, n, dim, t, dq1) + self.ctr.forward_backward(q2, k1, n, dim, t, dq2);
        // loss.backward()
        ensure(&mut self.dz, two_n * dim);
        let z = self.base.head.output(two_n);
        self.predictor.backward(z, &self.dq[..two_n * dim], two_n, &mut self.dz[..two_n * dim]);
        self.base.backward(&self.dz[..two_n * dim], two_n);
        loss
    }

    /// θ_k ← m·θ_k + (1−m)·θ_q over the parameters of backbone and projector (not the BN
    /// buffers, not the predictor), with the scalars rounded to f32 as PyTorch does.
    pub fn momentum_update(&mut self, m: f64) {
        let (a, b) = (m as f32, (1.0 - m) as f32);
        for (pk, pq) in self.momentum.params_mut().into_iter().zip(self.base.params_mut()) {
            ops::ema_update(&mut pk.w, &pq.w, a, b);
        }
    }

    /// Every parameter and buffer of the model under its official state_dict key
    /// (`base_encoder.*`, `momentum_encoder.*`, `predictor.*`), in that order.
    pub fn visit_tensors(&mut self, f: &mut TensorVisitor) {
        let parts: [(&str, &mut dyn Module); 3] =
            [("base_encoder.", &mut self.base), ("momentum_encoder.", &mut self.momentum), ("", &mut self.predictor)];
        for (prefix, m) in parts {
            // The predictor's names already start with `predictor.`.
            // Checkpoints read and write host vectors: each tensor is lent as one (a move).
            let mut host = |name: String, shape: &[usize], t: &mut Tensor| {
                let mut v = std::mem::take(t).into_vec();
                f(name, shape, &mut v);
                t.assign(v);
            };
            m.visit(&mut |p| host(format!("{prefix}{}", p.name), &p.shape, &mut p.w));
            m.visit_buffers(&mut |b| host(format!("{prefix}{}", b.name), &b.shape, b.data));
        }
    }

    /// Official keys of the trainable parameters, in the order of [`MoCo::trainable_params`].
    pub fn trainable_keys(&mut self) -> Vec<String> {
        let mut v: Vec<String> = self
            .base
            .params_mut()
            .into_iter()
            .filter(|p| p.trainable)
            .map(|p| format!("base_encoder.{}", p.name))
            .collect();
        v.extend(self.predictor.params_mut().into_iter().filter(|p| p.trainable).map(|p| p.name.clone()));
        v
    }

    /// Stop training the base encoder's `layer` ([`crate::models::backbone::layer_of`], e.g.
    /// `patch_embed`) from now on: its parameters keep their values. Returns the positions they
    /// had in [`MoCo::trainable_params`] (for the optimiser to drop their state).
    pub fn freeze_base_layer(&mut self, layer: &str) -> Vec<usize> {
        let mut positions = Vec::new();
        let mut i = 0;
        for p in self.base.params_mut() {
            if !p.trainable {
                continue;
            }
            if crate::models::backbone::layer_of(&p.name) == layer {
                p.trainable = false;
                p.g.fill(0.0);
                positions.push(i);
            }
            i += 1;
        }
        positions
    }

    /// Trainable parameters in the official order (base encoder, then predictor).
    pub fn trainable_params(&mut self) -> Vec<&mut Param> {
        let mut v = self.base.params_mut();
        v.extend(self.predictor.params_mut());
        v.retain(|p| p.trainable);
        v
    }

    /// Features of the base backbone (cls token after the final norm, or pooled ResNet
    /// channels), `[images, dim]`, as the last forward left them.
    pub fn features(&self, images: usize) -> &[f32] {
        self.base.backbone.output(images)
    }
}

/// ctr(q, k) = 2τ · CE(norm(q)·norm(k)ᵀ/τ, labels), with its gradient w.r.t. q. The keys are
/// gathered from every process of a data-parallel job (no gradient flows to them): the logits are
/// the local queries against the global keys, and query i's label is its own key, `i + n·rank`,
/// as the official `concat_all_gather`.
#[derive(Default)]
struct Contrastive {
    qn: Tensor,
    kn: Tensor,
    k_all: Tensor,
    norms: Tensor,
    logits: Tensor,
    labels: Vec<u32>,
    dqn: Tensor,
}

impl Contrastive {
    fn forward_backward(&mut self, q: &[f32], k: &[f32], n: usize, d: usize, t: f32, dq: &mut [f32]) -> f32 {
        let world = comm::world();
        let nk = n * world.world();
        ensure(&mut self.k_all, nk * d);
        world.all_gather(&mut self.k_all[..nk * d], k);
        ensure(&mut self.qn, n * d);
        ensure(&mut self.dqn, n * d);
        ensure(&mut self.kn, nk * d);
        ensure(&mut self.norms, n + nk);
        ensure(&mut self.logits, n * nk);
        let (qn, kn) = (&mut self.qn[..n * d], &mut self.kn[..nk * d]);
        let (nq, nkn) = self.norms[..n + nk].split_at_mut(n);
        ops::l2norm_forward(qn, nq, q, n, d);
        ops::l2norm_forward(kn, nkn, &self.k_all[..nk * d], nk, d);
        let logits = &mut self.logits[..n * nk];
        ops::matmul_nt(logits, qn, kn, n, nk, d, 1.0 / t);
        // CE with labels i + n·rank, mean over rows; the logits become d(2τ·CE)/d(logits).
        self.labels.clear();
        self.labels.extend((0..n).map(|i| (i + n * world.rank()) as u32));
        let total = ops::crossentropy_softmax_inplace(logits, &self.labels, n, nk, 2.0 * t / n as f32);
        // d qn = dlogits · kn / τ; then through the normalisation.
        let dqn = &mut self.dqn[..n * d];
        ops::matmul_nn(dqn, logits, kn, n, d, nk, 1.0 / t);
        ops::l2norm_backward(dq, dqn, qn, nq, n, d);
        (2.0 * t as f64 * total / n as f64) as f32
    }
}

#[cfg(test)]
mod tests;
