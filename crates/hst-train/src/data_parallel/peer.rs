//! One data-parallel peer: its place in the collective and the collective operations the training loop
//! needs (gradient all-reduce, broadcasts, the log window's sum), all through `burn-collective`.
//!
//! Every operation runs on the peer's collective thread and the peer waits for it at most
//! [`DataParallel::timeout`](super::DataParallel::timeout): a peer that died (a killed process, a lost
//! machine) turns into [`TrainError::Collective`] on the others instead of a hang.
//!
//! Tensors go through the collective in buckets: the float tensors of a module, flattened and
//! concatenated in visit order up to [`BUCKET_ELEMENTS`] values, one all-reduce per bucket (as PyTorch DDP
//! buckets its gradients). The visit order is the module's structure, the same in every process, unlike
//! parameter ids, which are random per process.

use std::sync::mpsc;
use std::time::Duration;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_collective::{self as collective, CollectiveConfig, PeerId, ReduceOperation};

use crate::error::TrainError;

/// Values per all-reduce bucket (64 MiB of `f32`).
pub const BUCKET_ELEMENTS: usize = 16 << 20;

type Job = Box<dyn FnOnce() + Send>;

/// A data-parallel peer; `B` is the inner (non-autodiff) backend the collective works on.
pub struct Peer<B: Backend> {
    /// Its rank among all peers (`node_rank · local_devices + local index`), also its id in the collective.
    pub rank: usize,
    /// Peers in the whole collective (all nodes).
    pub world: usize,
    device: B::Device,
    timeout: Duration,
    jobs: Option<mpsc::Sender<Job>>,
}

impl<B: Backend> Peer<B> {
    /// The one peer of a training that is not data-parallel: no collective, no thread.
    pub fn solo(device: B::Device) -> Self {
        Self {
            rank: 0,
            world: 1,
            device,
            timeout: Duration::MAX,
            jobs: None,
        }
    }

    /// Peer `rank` of `world`, with its collective thread; [`register`](Self::register) it next.
    pub(crate) fn new(rank: usize, world: usize, device: B::Device, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("hst-collective-{rank}"))
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawn the collective thread");
        Self {
            rank,
            world,
            device,
            timeout,
            jobs: Some(tx),
        }
    }

    /// Its id in the collective (its rank).
    fn id(&self) -> PeerId {
        PeerId(self.rank as u32)
    }

    /// Whether this peer evaluates, computes the prototypes, writes the run folder and reports progress.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Whether other peers exist.
    pub fn is_parallel(&self) -> bool {
        self.world > 1
    }

    /// The peer's device.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Run `op` on the collective thread and wait for it at most the timeout.
    fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        op: impl FnOnce() -> Result<T, collective::CollectiveError> + Send + 'static,
    ) -> Result<T, TrainError> {
        let Some(jobs) = &self.jobs else {
            unreachable!("a solo peer runs no collective operation")
        };
        let (tx, rx) = mpsc::sync_channel(1);
        jobs.send(Box::new(move || {
            let _ = tx.send(op());
        }))
        .map_err(|_| collective_error(what, self.rank, "the collective thread is gone".into()))?;
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(collective_error(what, self.rank, describe(&e))),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(collective_error(
                what,
                self.rank,
                format!(
                    "no answer from the other peers within {} s: a peer stopped (killed, crashed or \
                     failed) or cannot be reached; see the other peers' output",
                    self.timeout.as_secs()
                ),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(collective_error(
                what,
                self.rank,
                "the collective operation panicked".into(),
            )),
        }
    }

    /// Join the collective (every local peer of every node must call this). A peer never leaves it: the
    /// run resets the local collective when its peers are done, and a node's process ends its part in the
    /// cluster (burn-collective 0.21's `finish` waits on the orchestrator, which node 0 may already have
    /// closed).
    pub(crate) fn register(&mut self, config: CollectiveConfig) -> Result<(), TrainError> {
        let (id, device) = (self.id(), self.device.clone());
        self.call("joining the collective", move || {
            collective::register::<B>(id, device, config)
        })
    }

    /// The element-wise sum (or mean) of `tensor` over all peers.
    pub fn all_reduce<const D: usize>(
        &self,
        what: &'static str,
        tensor: Tensor<B, D>,
        op: ReduceOperation,
    ) -> Result<Tensor<B, D>, TrainError> {
        if !self.is_parallel() {
            return Ok(tensor);
        }
        let id = self.id();
        let primitive = tensor.into_primitive().tensor();
        let reduced = self.call(what, move || collective::all_reduce::<B>(id, primitive, op))?;
        Ok(Tensor::from_primitive(
            burn::tensor::TensorPrimitive::Float(reduced),
        ))
    }

    /// The main peer's `tensor` on every peer (an all-reduce of the main peer's values and zeros from the
    /// others, exact in floating point; burn-collective 0.21 has no broadcast between nodes). Every peer
    /// passes a tensor of the same shape; only the main peer's values matter.
    pub fn broadcast<const D: usize>(
        &self,
        what: &'static str,
        tensor: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, TrainError> {
        if !self.is_parallel() {
            return Ok(tensor);
        }
        self.all_reduce(what, self.contribution(tensor), ReduceOperation::Sum)
    }

    /// What this peer adds to a broadcast's sum: the main peer its values, the others zeros.
    fn contribution<const D: usize>(&self, tensor: Tensor<B, D>) -> Tensor<B, D> {
        if self.is_main() {
            tensor
        } else {
            tensor.zeros_like()
        }
    }

    /// All-reduce `tensors` (any shapes) in buckets of at most [`BUCKET_ELEMENTS`] values; the result keeps
    /// each tensor's shape and order.
    fn all_reduce_flat(
        &self,
        what: &'static str,
        tensors: Vec<Tensor<B, 1>>,
        op: ReduceOperation,
    ) -> Result<Vec<Tensor<B, 1>>, TrainError> {
        let mut out = Vec::with_capacity(tensors.len());
        let mut bucket: Vec<Tensor<B, 1>> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        let flush = |bucket: &mut Vec<Tensor<B, 1>>,
                     sizes: &mut Vec<usize>,
                     out: &mut Vec<Tensor<B, 1>>|
         -> Result<(), TrainError> {
            if bucket.is_empty() {
                return Ok(());
            }
            let joined = Tensor::cat(std::mem::take(bucket), 0);
            let reduced = self.all_reduce(what, joined, op)?;
            let mut offset = 0;
            for n in sizes.drain(..) {
                out.push(reduced.clone().narrow(0, offset, n));
                offset += n;
            }
            Ok(())
        };
        let mut filled = 0;
        for flat in tensors {
            let n = flat.dims()[0];
            if filled > 0 && filled + n > BUCKET_ELEMENTS {
                flush(&mut bucket, &mut sizes, &mut out)?;
                filled = 0;
            }
            bucket.push(flat);
            sizes.push(n);
            filled += n;
        }
        flush(&mut bucket, &mut sizes, &mut out)?;
        Ok(out)
    }

    /// The mean of every peer's gradients of `model`'s trainable parameters (burn-collective's mean
    /// all-reduce), so that each replica's optimizer step uses the same gradients.
    ///
    /// Which parameters have a gradient is decided by the schedule and the ablation, the same on every
    /// peer; a trainable parameter without a gradient on this peer contributes zeros and keeps no gradient
    /// here.
    pub fn mean_gradients<AB, M>(
        &self,
        mut grads: GradientsParams,
        model: &M,
    ) -> Result<GradientsParams, TrainError>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        if !self.is_parallel() {
            return Ok(grads);
        }
        let mut params = Trainable::default();
        model.visit(&mut params);
        let mut present = Vec::with_capacity(params.0.len());
        let flat: Vec<Tensor<B, 1>> = params
            .0
            .iter()
            .map(|(id, dims)| {
                let n = dims.iter().product::<usize>();
                let grad = remove_flat(&mut grads, *id, dims);
                present.push(grad.is_some());
                grad.unwrap_or_else(|| Tensor::zeros([n], &self.device))
            })
            .collect();
        let reduced = self.all_reduce_flat("gradient all-reduce", flat, ReduceOperation::Mean)?;
        for (((id, dims), grad), present) in params.0.iter().zip(reduced).zip(present) {
            if present {
                register_dims(&mut grads, *id, grad, dims);
            }
        }
        Ok(grads)
    }

    /// `model` with the main peer's values of every float parameter (the one broadcast that makes all
    /// replicas start from the same weights).
    pub fn broadcast_module<AB, M>(&self, model: M) -> Result<M, TrainError>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        if !self.is_parallel() {
            return Ok(model);
        }
        let mut values = Values::<AB>::default();
        model.visit(&mut values);
        let reduced = self.all_reduce_flat(
            "weight broadcast",
            values.0.into_iter().map(|t| self.contribution(t)).collect(),
            ReduceOperation::Sum,
        )?;
        Ok(model.map(&mut Replace {
            values: reduced.into_iter(),
        }))
    }
}

/// Take the gradient of parameter `id` (of shape `dims`) out of `grads`, flattened.
fn remove_flat<B: Backend>(
    grads: &mut GradientsParams,
    id: ParamId,
    dims: &[usize],
) -> Option<Tensor<B, 1>> {
    let n = dims.iter().product::<usize>();
    match dims.len() {
        1 => grads.remove::<B, 1>(id),
        2 => grads.remove::<B, 2>(id).map(|g| g.reshape([n])),
        3 => grads.remove::<B, 3>(id).map(|g| g.reshape([n])),
        4 => grads.remove::<B, 4>(id).map(|g| g.reshape([n])),
        5 => grads.remove::<B, 5>(id).map(|g| g.reshape([n])),
        d => unreachable!("no parameter of this model has {d} dimensions"),
    }
}

/// Register a flat gradient with its parameter's shape.
fn register_dims<B: Backend>(
    grads: &mut GradientsParams,
    id: ParamId,
    flat: Tensor<B, 1>,
    dims: &[usize],
) {
    match dims.len() {
        1 => grads.register::<B, 1>(id, flat.reshape([dims[0]])),
        2 => grads.register::<B, 2>(id, flat.reshape([dims[0], dims[1]])),
        3 => grads.register::<B, 3>(id, flat.reshape([dims[0], dims[1], dims[2]])),
        4 => grads.register::<B, 4>(id, flat.reshape([dims[0], dims[1], dims[2], dims[3]])),
        5 => grads.register::<B, 5>(
            id,
            flat.reshape([dims[0], dims[1], dims[2], dims[3], dims[4]]),
        ),
        d => unreachable!("no parameter of this model has {d} dimensions"),
    }
}

/// The trainable float parameters of a module, in visit order: `(id, shape)`.
#[derive(Default)]
struct Trainable(Vec<(ParamId, Vec<usize>)>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.is_require_grad() {
            self.0.push((param.id, param.val().dims().to_vec()));
        }
    }
}

/// The values of every float parameter, in visit order, on the inner backend.
struct Values<B: AutodiffBackend>(Vec<Tensor<B::InnerBackend, 1>>);

impl<B: AutodiffBackend> Default for Values<B> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Values<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let inner = param.val().inner();
        let n = inner.dims().iter().product::<usize>();
        self.0.push(inner.reshape([n]));
    }
}

/// Replace every float parameter's value, in visit order, keeping its id and whether it is trainable.
struct Replace<B: Backend, I: Iterator<Item = Tensor<B, 1>>> {
    values: I,
}

impl<AB, I> ModuleMapper<AB> for Replace<AB::InnerBackend, I>
where
    AB: AutodiffBackend,
    I: Iterator<Item = Tensor<AB::InnerBackend, 1>>,
{
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let value = self
            .values
            .next()
            .expect("one broadcast value per float parameter");
        param.map(|old| {
            let trainable = old.is_require_grad();
            let dims = old.dims();
            Tensor::from_inner(value.reshape(dims)).set_require_grad(trainable)
        })
    }
}

fn collective_error(what: &'static str, rank: usize, message: String) -> TrainError {
    TrainError::Collective {
        what,
        peer: rank,
        message,
    }
}

/// burn-collective's error in words.
fn describe(e: &collective::CollectiveError) -> String {
    use collective::CollectiveError as E;
    match e {
        E::LocalServerMissing | E::RegisterNotFirstOperation => {
            "another peer of this process stopped (its own error is reported above)".into()
        }
        E::Global(g) => {
            format!("between nodes: {g:?} (a node stopped, or the coordinator cannot be reached)")
        }
        E::InvalidConfig => "the collective configuration is incomplete".into(),
        E::AllReduceShapeMismatch | E::RegisterParamsMismatch => {
            format!("{e:?}: the peers do not run the same model and configuration")
        }
        other => format!("{other:?}"),
    }
}
