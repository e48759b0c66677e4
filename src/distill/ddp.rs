//! Data-parallel distillation on several devices: `optical distill --devices all|0,1,3`.
//!
//! One replica of student and teacher per device. Every optimiser step, the global
//! micro-batch of `batch_size` pairs (the same pairs, in the same order, that one device
//! would take) is split by position into one contiguous shard per replica; each replica
//! runs teacher forward, student forward, the OT kernels and backward on its shard in its
//! own thread; the gradients are summed over replicas; every replica clips with the same
//! global norm and takes the same AdamW step, so the replicas stay identical and replica 0
//! (the main one) alone writes checkpoints, logs and the exported student and runs the dev
//! evaluation.
//!
//! # Same meaning as on one device
//!
//! A shard of `b_k` pairs weighs its mean loss by `b_k / batch_size` (and by
//! `1 / grad_accumulation`), so the summed gradient is the gradient of the mean loss over
//! the global micro-batch: `batch_size`, `grad_accumulation`, `lr` and the schedule mean
//! what they mean on one device, and a run on `N` devices follows the one-device run up to
//! float summation order (`tests/distill_ddp.rs` checks 1e-5). Shards are fixed by
//! position (sizes differ by at most one, the first shards take the extra pairs), so a run
//! is reproducible and a resumed run continues the uninterrupted one.
//!
//! # Burn's distributed engine
//!
//! burn 0.22's distributed data parallel (burn-train's DDP strategy) keeps a model replica
//! per device in its own thread and marks the trainable parameters `set_distributed`;
//! during backward, burn's autodiff hands each parameter gradient, as soon as it is final,
//! to burn's gradient-sync server, which all-reduces it across the devices
//! (`burn::tensor::distributed`, NCCL on CUDA); each replica then steps its own optimiser.
//! The distillation step is no burn-train `Learner` (teacher cache, OT kernels between
//! forward and backward, its own checkpoints), so this module does what that strategy does
//! with the same burn primitives: a [`DistributedContext`] over the devices,
//! `set_distributed` on the student's trainable parameters, one thread per replica,
//! `backward`, and one `ModuleOptimizer` step per replica ([`GradientSync::Collective`]).
//!
//! burn 0.22.1 implements the collective only for CUDA (cubecl-cuda through NCCL) and
//! remote devices: its CPU backend (flex) refuses it and its wgpu runtime panics inside
//! cubecl. For those devices the gradients are combined by burn's multi-device path
//! instead, the one burn-train's `MultiDevice` strategy takes: `GradientsParams::to_device`
//! onto the main device, burn's `GradientsAccumulator` (in replica order, so the sum is
//! reproducible), and the sum `to_device` back to every replica
//! ([`GradientSync::Gather`]). Burn's CPU backend is a single device, so several CPU
//! "devices" are several replicas on it, each in its own thread: that is what the tests
//! and a CPU-only check of a multi-device run use; it does not make CPU training faster.
//!
//! # Failures and interruption
//!
//! Forward and loss run on every replica before any backward starts: an error or panic on
//! one replica (bad token ids in its shard, a non-finite loss, a device failure) stops the
//! step before any collective or update, and surfaces as [`Error::Replica`] naming the
//! replica, its device and the step. The replicas only run inside [`Trainer::step`], so
//! Ctrl-C, which the run checks between steps, finds them all at the same step and the
//! main replica saves one consistent checkpoint; a failed step saves nothing, so the last
//! checkpoint stays as it was. `--resume` loads that checkpoint into the main replica and
//! copies model and optimiser state to the others.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};

use super::loss::LossStats;
use super::train::{
    check_grad_norm, grad_norm, materialise, scale_grads, settle, shard_loss, HostCache,
    ReplicaParts, ShardLoss, Shared, StepRecord, StepTimes, Trainer,
};
use crate::backend::{Backend, BackendKind};
use crate::encoder::model::TransformerEncoder;
use crate::encoder::read_scalar;
use crate::error::{Error, Result};

/// The `devices` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSelection {
    /// One device: the backend's default (what a run without `--devices` uses).
    Default,
    /// Every device burn finds for the backend (one for the CPU backends).
    All,
    /// These device indices, in this order (the first is the main replica's). On the CPU
    /// backends, which burn runs as one device, each index is one more replica on it.
    List(Vec<usize>),
}

impl FromStr for DeviceSelection {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let expected = "default, all, or distinct device indices separated by commas (0,1,3)";
        match s.trim() {
            "default" => return Ok(DeviceSelection::Default),
            "all" => return Ok(DeviceSelection::All),
            _ => {}
        }
        let mut list = Vec::new();
        for part in s.split(',') {
            let index: usize = part
                .trim()
                .parse()
                .map_err(|_| Error::parameter("devices", expected, s))?;
            if list.contains(&index) {
                return Err(Error::parameter(
                    "devices",
                    expected,
                    format!("{s} (device {index} twice)"),
                ));
            }
            list.push(index);
        }
        Ok(DeviceSelection::List(list))
    }
}

impl fmt::Display for DeviceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelection::Default => f.write_str("default"),
            DeviceSelection::All => f.write_str("all"),
            DeviceSelection::List(list) => {
                let parts: Vec<String> = list.iter().map(usize::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// The burn devices (without autodiff) that `selection` names for `backend`; the first is
/// the main replica's.
pub fn resolve_devices(backend: BackendKind, selection: &DeviceSelection) -> Result<Vec<Device>> {
    if *selection == DeviceSelection::Default {
        return Ok(vec![crate::encoder::device_for(backend)?]);
    }
    match backend {
        BackendKind::Cpu | BackendKind::CpuReference => Ok(match selection {
            DeviceSelection::List(list) => vec![Device::flex(); list.len()],
            _ => vec![Device::flex()],
        }),
        BackendKind::Wgpu | BackendKind::Cuda => {
            let found = crate::encoder::enumerate_devices(backend)?;
            match selection {
                DeviceSelection::List(list) => list
                    .iter()
                    .map(|&i| {
                        found.get(i).cloned().ok_or_else(|| {
                            Error::parameter(
                                "devices",
                                format!(
                                    "indices below the {} {} devices burn finds",
                                    found.len(),
                                    backend.name()
                                ),
                                i,
                            )
                        })
                    })
                    .collect(),
                _ => Ok(found),
            }
        }
    }
}

/// How the replicas' gradients become one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradientSync {
    /// burn's collective all-reduce inside backward (burn's DDP; CUDA, through NCCL).
    Collective,
    /// burn's multi-device path: gradients moved to the main device and summed there by
    /// burn's `GradientsAccumulator`, the sum moved back (devices without the collective).
    Gather,
}

impl GradientSync {
    /// The synchronisation burn 0.22 supports for `backend`'s devices.
    pub fn for_backend(backend: BackendKind) -> Self {
        match backend {
            BackendKind::Cuda => GradientSync::Collective,
            BackendKind::Cpu | BackendKind::CpuReference | BackendKind::Wgpu => {
                GradientSync::Gather
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GradientSync::Collective => "all-reduce",
            GradientSync::Gather => "gather",
        }
    }
}

/// The contiguous shards of a global micro-batch for `n` replicas: sizes differ by at
/// most one and the first shards take the extra pairs. Empty shards only when `n`
/// exceeds the batch (which the configuration rules out).
pub fn shards(batch: &[usize], n: usize) -> Vec<&[usize]> {
    let n = n.max(1);
    let (base, extra) = (batch.len() / n, batch.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 0..n {
        let len = base + usize::from(k < extra);
        out.push(&batch[start..start + len]);
        start += len;
    }
    out
}

/// One replica besides the main one.
pub(super) struct Replica {
    /// Its autodiff device.
    device: Device,
    student: TransformerEncoder,
    teacher: TransformerEncoder,
    cache: HostCache,
    backend: Backend,
    optim: ModuleOptimizer,
}

/// The replicas of a data-parallel run besides the main one, and how they synchronise.
pub struct DdpGroup {
    replicas: Vec<Replica>,
    sync: GradientSync,
    /// Every replica's autodiff device, the main one's first.
    devices: Vec<Device>,
    /// Keeps burn's gradient-sync server alive while the replicas exist (collective only);
    /// declared last so that it is dropped after them.
    _context: Option<DistributedContext>,
}

/// Marks trainable parameters as distributed, so that burn's autodiff submits their
/// gradients to the all-reduce during backward (what burn-train's DDP sharder does).
struct MarkDistributed;

impl ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if tensor.is_require_grad() {
            tensor.set_distributed(id)
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// A copy of the gradients of `module`'s parameters (the tensors are shared, not copied).
struct CopyGrads<'a> {
    from: &'a GradientsParams,
    to: GradientsParams,
}

impl ModuleVisitor for CopyGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.from.get::<D>(param.id) {
            self.to.register(param.id, g);
        }
    }
}

fn copy_grads(module: &TransformerEncoder, grads: &GradientsParams) -> GradientsParams {
    let mut copy = CopyGrads {
        from: grads,
        to: GradientsParams::new(),
    };
    module.visit(&mut copy);
    copy.to
}

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let what = if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_string()
    };
    Error::Backend {
        backend: "burn",
        operation: "replica thread",
        what,
    }
}

/// Elementwise maximum of the forward parts: the slowest replica sets the pace.
fn max_forward(a: &mut StepTimes, b: &StepTimes) {
    a.teacher = a.teacher.max(b.teacher);
    a.student = a.student.max(b.student);
    a.ot = a.ot.max(b.ot);
    a.transfer = a.transfer.max(b.transfer);
}

/// One AdamW step of a replica, materialised.
fn apply(
    optim: &mut ModuleOptimizer,
    student: &mut TransformerEncoder,
    lr: f64,
    grads: GradientsParams,
) {
    *student = optim.step(lr, student.clone(), grads);
    materialise(student);
}

impl Trainer {
    /// Spread the run over `devices` (burn devices, with or without autodiff; the first
    /// must be the student's): one replica of student, teacher, optimiser state and
    /// kernel backend per further device, copied from this trainer. One device undoes any
    /// earlier replication. Call after a checkpoint is loaded or before; loading one
    /// later copies it to every replica.
    pub fn replicate(&mut self, devices: &[Device]) -> Result<()> {
        let Some(first) = devices.first() else {
            return Err(Error::parameter("devices", "at least one device", "none"));
        };
        let main = self.student.embeddings.word.weight.val().device();
        if *first != main {
            return Err(Error::value(
                "devices",
                format!("the first device must hold the student ({main:?}), found {first:?}"),
            ));
        }
        if devices.len() > self.config.batch_size {
            return Err(Error::parameter(
                "batch_size",
                format!(
                    "at least the {} devices (each replica needs one pair of every global \
                     micro-batch)",
                    devices.len()
                ),
                self.config.batch_size,
            ));
        }
        // Drop the old group (and its sync server) before starting another.
        self.ddp = None;
        if devices.len() == 1 {
            return Ok(());
        }
        // Gradients move between the encoders' devices; each replica's OT kernels run on
        // the OT backend (the same kind unless `ot_backend` says otherwise).
        let kind: BackendKind = self.config.backend.parse()?;
        let ot_kind = self.config.ot_backend_kind()?;
        let sync = GradientSync::for_backend(kind);
        let devices: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
        let mut replicas = Vec::with_capacity(devices.len() - 1);
        for device in &devices[1..] {
            replicas.push(Replica {
                device: device.clone(),
                student: self.student.clone().fork(device),
                teacher: self.teacher.clone().fork(&device.clone().inner()),
                cache: HostCache::new(self.config.cache_mb),
                backend: self.config.open_ot_backend(ot_kind)?,
                optim: self.optim.clone(),
            });
        }
        let context = (sync == GradientSync::Collective).then(|| {
            DistributedContext::init(
                devices.clone(),
                DistributedConfig {
                    // Each shard's loss is already weighed by its share of the batch.
                    all_reduce_op: ReduceOperation::Sum,
                },
            )
        });
        self.ddp = Some(DdpGroup {
            replicas,
            sync,
            devices,
            _context: context,
        });
        self.mark_distributed();
        Ok(())
    }

    /// Devices the run trains on (1 without [`Self::replicate`]).
    pub fn devices(&self) -> usize {
        1 + self.ddp.as_ref().map_or(0, |g| g.replicas.len())
    }

    /// The backend the OT kernels run on (`ot_backend`, else `backend`), as built.
    pub fn ot_backend(&self) -> crate::backend::BackendKind {
        self.backend.kind()
    }

    /// How the replicas' gradients are combined (`None` on one device).
    pub fn gradient_sync(&self) -> Option<GradientSync> {
        self.ddp.as_ref().map(|g| g.sync)
    }

    /// The student of replica `k` (0: the main one), for checks that the replicas agree.
    pub fn replica_student(&self, k: usize) -> Option<&TransformerEncoder> {
        match k {
            0 => Some(&self.student),
            _ => self
                .ddp
                .as_ref()
                .and_then(|g| g.replicas.get(k - 1))
                .map(|r| &r.student),
        }
    }

    /// Copy the main replica's model and optimiser state to the others (after a
    /// checkpoint was loaded into it).
    pub(super) fn resync_replicas(&mut self) {
        let (student, optim) = (&self.student, &self.optim);
        if let Some(group) = self.ddp.as_mut() {
            for r in &mut group.replicas {
                r.student = student.clone().fork(&r.device);
                r.optim = optim.clone();
            }
        }
        self.mark_distributed();
    }

    fn mark_distributed(&mut self) {
        let Some(group) = self.ddp.as_mut() else {
            return;
        };
        if group.sync != GradientSync::Collective {
            return;
        }
        for r in &mut group.replicas {
            r.student = r.student.clone().map(&mut MarkDistributed);
        }
        self.student = self.student.clone().map(&mut MarkDistributed);
    }

    /// One data-parallel optimiser step (see the module documentation).
    pub(super) fn ddp_step(&mut self) -> Result<StepRecord> {
        let Some(mut group) = self.ddp.take() else {
            return Err(Error::value("data-parallel step", "no replicas"));
        };
        let result = self.ddp_step_with(&mut group);
        self.ddp = Some(group);
        result
    }

    fn replica_error(&self, group: &DdpGroup, k: usize, source: Error) -> Error {
        Error::Replica {
            replica: k,
            replicas: group.devices.len(),
            device: format!("{:?}", group.devices[k].clone().inner()),
            step: self.state.step + 1,
            source: Box::new(source),
        }
    }

    fn ddp_step_with(&mut self, group: &mut DdpGroup) -> Result<StepRecord> {
        let t_step = Instant::now();
        let lr = self.config.lr_at(self.state.step);
        let ga = self.config.grad_accumulation;
        let n = group.devices.len();
        let main_device = group.devices[0].clone();
        let mut times = StepTimes::default();
        let mut loss_sum = 0.0;
        let mut stats_sum = LossStats::default();
        let mut tokens = 0usize;
        // Gather: everything is summed on the main device. Collective: each replica's
        // gradients are already the sum over replicas; each accumulates its own.
        let mut accumulators: Vec<GradientsAccumulator<TransformerEncoder>> =
            (0..n).map(|_| GradientsAccumulator::new()).collect();
        for _ in 0..ga {
            let idx = self.next_batch();
            let b = idx.len();
            let shard_idx = shards(&idx, n);

            // Forward and loss on every replica; no backward until all of them succeeded.
            let forward: Vec<Result<(ShardLoss, f32)>> = {
                let shared = Shared {
                    config: &self.config,
                    data: &self.data,
                    pads: (self.student_pad, self.teacher_pad),
                    loss: self.loss,
                    shared_prefix: self.shared_prefix,
                    timed_parts: self.timed_parts,
                };
                let mut parts = vec![ReplicaParts {
                    student: &self.student,
                    teacher: &self.teacher,
                    cache: &mut self.cache,
                    backend: &self.backend,
                }];
                parts.extend(group.replicas.iter_mut().map(|r| ReplicaParts {
                    student: &r.student,
                    teacher: &r.teacher,
                    cache: &mut r.cache,
                    backend: &r.backend,
                }));
                let shared = &shared;
                std::thread::scope(|s| {
                    let handles: Vec<_> = parts
                        .into_iter()
                        .zip(&shard_idx)
                        .map(|(parts, &shard)| {
                            let divisor = (b * ga) as f64 / shard.len().max(1) as f64;
                            s.spawn(move || -> Result<(ShardLoss, f32)> {
                                let out = shard_loss(parts, shared, shard, divisor)?;
                                let value = read_scalar(
                                    out.loss.clone().detach(),
                                    "read the training loss",
                                )?;
                                Ok((out, value))
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| Err(panic_error(p))))
                        .collect()
                })
            };
            let mut losses = Vec::with_capacity(n);
            let mut slowest = StepTimes::default();
            for (k, result) in forward.into_iter().enumerate() {
                let (shard, value) = result.map_err(|e| self.replica_error(group, k, e))?;
                if !value.is_finite() {
                    let e = Error::value(
                        "training loss",
                        format!("non-finite loss {value} at step {}", self.state.step),
                    );
                    return Err(self.replica_error(group, k, e));
                }
                let share = shard_idx[k].len() as f64 / b as f64 / ga as f64;
                loss_sum += value as f64;
                stats_sum.ot_cost += shard.stats.ot_cost * share;
                stats_sum.sinkhorn_iterations += shard.stats.sinkhorn_iterations * share;
                stats_sum.converged += shard.stats.converged * share;
                stats_sum.mse += shard.stats.mse * share;
                tokens += shard.tokens;
                max_forward(&mut slowest, &shard.times);
                losses.push(shard.loss);
            }
            times.add_forward(&slowest);

            // Backward on every replica at once (the collective needs all of them).
            let t2 = Instant::now();
            let mut students = vec![&self.student];
            students.extend(group.replicas.iter().map(|r| &r.student));
            let grads: Vec<Result<GradientsParams>> = std::thread::scope(|s| {
                let handles: Vec<_> = losses
                    .into_iter()
                    .zip(students)
                    .map(|(loss, student)| {
                        s.spawn(move || GradientsParams::from_grads(loss.backward(), student))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(panic_error))
                    .collect()
            });
            for device in &group.devices {
                settle(device, self.timed_parts)?;
            }
            times.backward += t2.elapsed().as_secs_f64();
            let t_sync = Instant::now();
            for (k, g) in grads.into_iter().enumerate() {
                let g = g.map_err(|e| self.replica_error(group, k, e))?;
                match group.sync {
                    GradientSync::Gather => {
                        let g = g.to_device(&main_device, &self.student);
                        accumulators[0].accumulate(&self.student, g);
                    }
                    GradientSync::Collective => {
                        let student = if k == 0 {
                            &self.student
                        } else {
                            &group.replicas[k - 1].student
                        };
                        accumulators[k].accumulate(student, g);
                    }
                }
            }
            times.sync += t_sync.elapsed().as_secs_f64();
        }

        // One global gradient on every replica; the same clipping everywhere.
        let t_sync = Instant::now();
        let main_grads = accumulators[0].grads();
        let mut replica_grads: Vec<GradientsParams> = match group.sync {
            GradientSync::Gather => group
                .replicas
                .iter()
                .map(|r| copy_grads(&self.student, &main_grads).to_device(&r.device, &r.student))
                .collect(),
            GradientSync::Collective => accumulators[1..].iter_mut().map(|a| a.grads()).collect(),
        };
        times.sync += t_sync.elapsed().as_secs_f64();
        let t3 = Instant::now();
        let grad_norm = grad_norm(&self.student, &main_grads);
        check_grad_norm(grad_norm, self.state.step)?;
        let mut main_grads = main_grads;
        if let Some(scale) = self.clip_scale(grad_norm) {
            scale_grads(&self.student, &mut main_grads, scale);
            for (r, g) in group.replicas.iter().zip(&mut replica_grads) {
                scale_grads(&r.student, g, scale);
            }
        }
        let updates: Vec<std::thread::Result<()>> = std::thread::scope(|s| {
            let (optim, student) = (&mut self.optim, &mut self.student);
            let mut handles = vec![s.spawn(move || apply(optim, student, lr, main_grads))];
            for (r, g) in group.replicas.iter_mut().zip(replica_grads) {
                let (optim, student) = (&mut r.optim, &mut r.student);
                handles.push(s.spawn(move || apply(optim, student, lr, g)));
            }
            handles.into_iter().map(|h| h.join()).collect()
        });
        for (k, u) in updates.into_iter().enumerate() {
            u.map_err(|p| self.replica_error(group, k, panic_error(p)))?;
        }
        times.optimizer = t3.elapsed().as_secs_f64();
        times.total = t_step.elapsed().as_secs_f64();
        Ok(self.finish_step(lr, loss_sum, stats_sum, grad_norm, tokens, times))
    }
}
