//! Data-parallel training on Burn's collective (`burn-collective`): one model replica per device, on one
//! machine or on several.
//!
//! - **Peers.** Each device is a peer with a rank (`node_rank · devices_per_node + local index`). Every
//!   training batch of `batch_size` images is split into equal shares, one per peer in rank order; each
//!   peer runs forward and backward on its share, the gradients are averaged over all peers (a mean
//!   all-reduce) and each replica takes the same optimizer step on the same gradients. The replicas start
//!   from one broadcast of the main peer's weights (rank 0).
//! - **Once, on the main peer:** the CST prototypes (then broadcast), the evaluation, the run folder
//!   (metrics, report, checkpoints) and the progress display. A resumed run loads `checkpoints/last.ckpt`
//!   on every peer (the same file in one process; on several machines each node needs the run folder's
//!   checkpoint) and the peers check they start from the same epoch and batch.
//! - **BatchNorm** is per replica, as PyTorch DDP's default: batch statistics of the peer's share, running
//!   statistics updated per replica, the main peer's kept in checkpoints (PyTorch broadcasts rank 0's
//!   buffers). Frozen stages use their running statistics and are identical on every peer.
//! - **Logs** are summed over peers at each log point (`log_every`), so the loss means and pseudo-label
//!   counts are those of all shares; a stop request (Ctrl-C on any node) takes effect on every peer at the
//!   next log point, and a non-finite loss stops every peer at the same window.
//! - **Several machines** (`Cluster`): node 0 runs burn-collective's orchestrator on the coordinator
//!   address; every node registers its local peers there and serves its tensors to the other nodes.
//!
//! With one peer nothing of this runs: [`train_data_parallel`] is [`crate::train`].

mod peer;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use burn::tensor::backend::AutodiffBackend;
use burn_collective::{self as collective, AllReduceStrategy, CollectiveConfig};

use crate::config::TrainConfig;
use crate::data::RunData;
use crate::error::TrainError;
use crate::trainer::{self, RunSummary, Silent, TrainObserver, TrainOptions};

pub use peer::{Peer, BUCKET_ELEMENTS};

/// How long a peer waits for the others in one collective operation by default before it gives up: long
/// enough for the main peer's evaluation and prototype pass, during which the others wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Several machines (nodes) in one collective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Nodes in the collective (`--nodes`).
    pub nodes: u32,
    /// This node's rank, `0..nodes` (`--node-rank`); node 0 runs the orchestrator and holds the main peer.
    pub node_rank: u32,
    /// Where node 0's orchestrator listens (`--coordinator HOST:PORT`).
    pub coordinator: SocketAddr,
    /// Where the other nodes reach this node's tensor service (`--node-address`). Default: this machine's
    /// address on the route to the coordinator, port `coordinator port + 1 + node_rank`.
    pub node_address: Option<SocketAddr>,
}

impl Cluster {
    /// This node's address for the other nodes (see [`Cluster::node_address`]).
    ///
    /// # Errors
    /// No route to the coordinator.
    pub fn resolved_node_address(&self) -> Result<SocketAddr, TrainError> {
        if let Some(addr) = self.node_address {
            return Ok(addr);
        }
        let port = self.coordinator.port() as u32 + 1 + self.node_rank;
        let port = u16::try_from(port).map_err(|_| {
            TrainError::Config(format!(
                "no default port for node {} (coordinator port {} + 1 + rank exceeds 65535); set --node-address",
                self.node_rank,
                self.coordinator.port()
            ))
        })?;
        let ip = if self.coordinator.ip().is_loopback() {
            self.coordinator.ip()
        } else {
            // The local address the system would use towards the coordinator (no packet is sent).
            UdpSocket::bind(("0.0.0.0", 0))
                .and_then(|s| s.connect(self.coordinator).and_then(|_| s.local_addr()))
                .map_err(|e| {
                    TrainError::Config(format!(
                        "no route to the coordinator {}: {e}; set --node-address",
                        self.coordinator
                    ))
                })?
                .ip()
        };
        Ok(SocketAddr::new(ip, port))
    }
}

/// Where the peers of a data-parallel run are.
#[derive(Debug, Clone)]
pub struct DataParallel<D> {
    /// This node's devices, one peer each (e.g. `cuda:0, cuda:1`; the same CPU device several times for
    /// several flex peers).
    pub devices: Vec<D>,
    /// Other machines, if any.
    pub cluster: Option<Cluster>,
    /// How long a peer waits for the others in one collective operation before it stops with an error.
    pub timeout: Duration,
}

impl<D: Clone> DataParallel<D> {
    /// Peers on `devices` of this machine only.
    pub fn new(devices: Vec<D>) -> Self {
        Self {
            devices,
            cluster: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Join other machines.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Set [`DataParallel::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Peers in the whole collective.
    pub fn world(&self) -> usize {
        self.devices.len() * self.cluster.as_ref().map_or(1, |c| c.nodes as usize)
    }

    /// What is wrong with this layout for `config`, before anything starts.
    ///
    /// # Errors
    /// No device, a node rank out of range, a batch that does not split into equal shares.
    pub fn check(&self, config: &TrainConfig) -> Result<(), TrainError> {
        if self.devices.is_empty() {
            return Err(TrainError::Config(
                "data-parallel training needs at least one device".into(),
            ));
        }
        if let Some(c) = &self.cluster {
            if c.nodes == 0 || c.node_rank >= c.nodes {
                return Err(TrainError::Config(format!(
                    "node rank {} is not in 0..{} (--node-rank, --nodes)",
                    c.node_rank, c.nodes
                )));
            }
        }
        let world = self.world();
        if !config.batch_size.is_multiple_of(world) {
            return Err(TrainError::Config(format!(
                "batch_size {} does not split into {world} equal shares (one per peer); choose a multiple of {world}",
                config.batch_size
            )));
        }
        Ok(())
    }
}

/// One data-parallel run per process at a time: burn-collective's local server is one per backend and
/// process.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// Node 0's orchestrators, by port (one per process and port: it serves until the process ends).
static ORCHESTRATORS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Train as [`crate::train`] does, with one peer per device of `parallel` (and per device of the other
/// nodes of its cluster). `observer` gets the main peer's progress; on other nodes, the progress of the
/// node's first peer without evaluation. Returns this node's first peer's summary (metrics on node 0).
///
/// # Errors
/// Those of [`crate::train`]; [`TrainError::Config`] for a layout that does not fit the configuration;
/// [`TrainError::Collective`] when a peer stops or cannot be reached (after at most `parallel.timeout`).
pub fn train_data_parallel<B: AutodiffBackend>(
    config: &TrainConfig,
    data: &RunData,
    out: &Path,
    options: &TrainOptions,
    parallel: &DataParallel<B::Device>,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary, TrainError> {
    parallel.check(config)?;
    let world = parallel.world();
    if world == 1 {
        return trainer::train::<B>(config, data, out, options, &parallel.devices[0], observer);
    }
    let results = run_peers::<B, _>(
        parallel,
        |peer| trainer::session::<B>(config, data, out, options, peer, observer),
        |peer| trainer::session::<B>(config, data, out, options, peer, &mut Silent),
    )?;
    first_cause(results)
}

/// Run `work` on every local peer of `parallel`, each registered in the collective (and, with a cluster,
/// joined to the other nodes); returns each local peer's result, in local order. One run of peers per
/// process at a time.
///
/// # Errors
/// A cluster whose node address cannot be found or whose orchestrator cannot start (before any peer runs).
pub fn run_local_peers<B, T, F>(
    parallel: &DataParallel<B::Device>,
    work: F,
) -> Result<Vec<Result<T, TrainError>>, TrainError>
where
    B: AutodiffBackend,
    T: Send,
    F: Fn(&Peer<B::InnerBackend>) -> Result<T, TrainError> + Sync,
{
    run_peers::<B, T>(parallel, &work, &work)
}

/// [`run_local_peers`] with the work of the node's first peer apart (it runs on the calling thread).
fn run_peers<B: AutodiffBackend, T: Send>(
    parallel: &DataParallel<B::Device>,
    first: impl FnOnce(&Peer<B::InnerBackend>) -> Result<T, TrainError>,
    others: impl Fn(&Peer<B::InnerBackend>) -> Result<T, TrainError> + Sync,
) -> Result<Vec<Result<T, TrainError>>, TrainError> {
    let _one = ONE_RUN.lock().unwrap_or_else(|p| p.into_inner());
    let world = parallel.world();
    let local = parallel.devices.len();
    let mut collective_config = CollectiveConfig::default().with_num_devices(local);
    let node_rank = parallel
        .cluster
        .as_ref()
        .map_or(0, |c| c.node_rank as usize);
    if let Some(cluster) = &parallel.cluster {
        let node = cluster.resolved_node_address()?;
        if cluster.node_rank == 0 {
            start_orchestrator(cluster.coordinator.port())?;
        }
        let address = |a: SocketAddr| {
            format!("ws://{a}")
                .parse()
                .expect("any string is an address")
        };
        collective_config = collective_config
            .with_num_nodes(cluster.nodes)
            .with_global_address(address(cluster.coordinator))
            .with_node_address(address(node))
            .with_data_service_port(node.port())
            // burn-collective's ring all-reduce refuses tensors with fewer values than nodes.
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2));
        tracing::info!(
            nodes = cluster.nodes,
            node_rank = cluster.node_rank,
            coordinator = %cluster.coordinator,
            node = %node,
            "joining the cluster"
        );
    }
    collective::reset_collective::<B::InnerBackend>();
    let run_peer = |index: usize, work: &mut PeerWork<'_, B::InnerBackend, T>| {
        let rank = node_rank * local + index;
        let device = parallel.devices[index].clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut peer = Peer::<B::InnerBackend>::new(rank, world, device, parallel.timeout);
            peer.register(collective_config.clone())?;
            work(&peer)
        }));
        let outcome = outcome.unwrap_or_else(|panic| {
            Err(TrainError::Collective {
                what: "training",
                peer: rank,
                message: panic_message(panic.as_ref()),
            })
        });
        if outcome.is_err() {
            // Wake the other local peers waiting for this one: their operations fail at once.
            collective::reset_collective::<B::InnerBackend>();
        }
        outcome
    };
    let results = std::thread::scope(|scope| {
        let others: Vec<_> = (1..local)
            .map(|index| {
                let (run_peer, others) = (&run_peer, &others);
                std::thread::Builder::new()
                    .name(format!("hst-peer-{}", node_rank * local + index))
                    .spawn_scoped(scope, move || run_peer(index, &mut |p| others(p)))
                    .expect("spawn a peer thread")
            })
            .collect();
        let mut first = Some(first);
        let mut results = vec![run_peer(0, &mut |p| {
            (first.take().expect("the first peer runs once"))(p)
        })];
        results.extend(others.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(TrainError::Config("a peer thread panicked".into())))
        }));
        results
    });
    collective::reset_collective::<B::InnerBackend>();
    Ok(results)
}

/// The work of one peer.
type PeerWork<'a, B, T> = dyn FnMut(&Peer<B>) -> Result<T, TrainError> + 'a;

/// The first peer's summary, or the error that caused the others: the first one that is not a peer
/// giving up on the others.
fn first_cause(results: Vec<Result<RunSummary, TrainError>>) -> Result<RunSummary, TrainError> {
    if results.iter().all(Result::is_ok) {
        return results.into_iter().next().expect("one result per peer");
    }
    let mut errors: Vec<TrainError> = results.into_iter().filter_map(Result::err).collect();
    let cause = errors
        .iter()
        .position(|e| !matches!(e, TrainError::Collective { .. }))
        .unwrap_or(0);
    Err(errors.swap_remove(cause))
}

/// Start burn-collective's orchestrator on `port` of every interface, on a thread of its own, once per port
/// and process.
fn start_orchestrator(port: u16) -> Result<(), TrainError> {
    let mut running = ORCHESTRATORS.lock().unwrap_or_else(|p| p.into_inner());
    if running.contains(&port) {
        return Ok(());
    }
    // Refuse a port in use before the orchestrator's server fails on it in the background.
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        TrainError::Config(format!(
            "the coordinator port {port} cannot be opened on this node (node 0 runs the orchestrator there): {e}"
        ))
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| TrainError::Config(format!("cannot start the orchestrator's runtime: {e}")))?;
    std::thread::Builder::new()
        .name("hst-orchestrator".into())
        .spawn(move || runtime.block_on(collective::start_global_orchestrator(port)))
        .map_err(|e| TrainError::Config(format!("cannot start the orchestrator thread: {e}")))?;
    running.push(port);
    Ok(())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}
