//! Backend selection: the one place where a concrete Burn backend is named.
//!
//! Every job (training, evaluation, benchmarks) is written once, generic over `B: AutodiffBackend`, as a
//! [`BackendJob`]. [`run_on`] maps a [`BackendName`] chosen at run time (`--backend flex|ndarray|wgpu|vulkan|cuda`)
//! to the matching generic instantiation. A backend that was not compiled in, or whose driver is missing at run
//! time (no `libcuda.so`, no Vulkan/WGPU adapter), is reported as a [`BackendError`], never as a panic.

use std::fmt;

use burn::tensor::backend::{AutodiffBackend, DeviceId, DeviceOps};
use burn::tensor::Tensor;

/// The backends this project knows. Which of them are usable depends on the cargo features the binary was
/// built with (see [`BackendName::compiled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// Pure-Rust CPU backend (`burn-flex`), feature `flex` (default).
    Flex,
    /// `ndarray` CPU backend, feature `ndarray`.
    Ndarray,
    /// WGPU (any Vulkan/Metal/DX12 adapter), feature `wgpu`: WGSL shaders, except in a binary that also has
    /// the `vulkan` feature, where CubeCL compiles SPIR-V for every Vulkan adapter (this backend included).
    Wgpu,
    /// WGPU compiling SPIR-V for Vulkan devices, feature `vulkan`.
    Vulkan,
    /// NVIDIA CUDA, feature `cuda` (needs `libcuda` and `libnvrtc` at run time).
    Cuda,
}

impl BackendName {
    /// All backends, compiled in or not.
    pub const ALL: [BackendName; 5] = [
        Self::Flex,
        Self::Ndarray,
        Self::Wgpu,
        Self::Vulkan,
        Self::Cuda,
    ];

    /// The lowercase name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Vulkan => "vulkan",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the cargo feature of this backend.
    pub fn compiled(self) -> bool {
        match self {
            Self::Flex => cfg!(feature = "flex"),
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Vulkan => cfg!(feature = "vulkan"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// `Ok` if this binary was built with the backend's feature, else [`BackendError::NotCompiled`].
    pub fn ensure_compiled(self) -> Result<(), BackendError> {
        if self.compiled() {
            return Ok(());
        }
        Err(BackendError::NotCompiled {
            name: self,
            available: Self::available()
                .iter()
                .map(|b| b.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The backends compiled into this binary.
    pub fn available() -> Vec<BackendName> {
        Self::ALL.into_iter().filter(|b| b.compiled()).collect()
    }

    /// The default backend: the first compiled CPU backend (flex before ndarray), else the first compiled one.
    pub fn default_compiled() -> Option<BackendName> {
        Self::available().into_iter().next()
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a backend could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The binary was built without the backend's cargo feature.
    #[error(
        "backend `{name}` is not compiled into this binary; rebuild with `--features {name}` \
         (compiled in: {available})"
    )]
    NotCompiled {
        /// The requested backend.
        name: BackendName,
        /// The compiled backends, comma-separated.
        available: String,
    },
    /// The backend is compiled in but its driver or device is not usable on this machine.
    #[error("backend `{name}` is compiled in but cannot start on this machine: {reason}")]
    Unavailable {
        /// The requested backend.
        name: BackendName,
        /// What is missing, in words.
        reason: String,
    },
}

/// A piece of work written once, generic over the autodiff backend.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Run the job on backend `B` and `device`.
    fn run<B: AutodiffBackend>(self, backend: BackendName, device: B::Device) -> Self::Output;
}

/// A piece of work on several devices of one backend (data-parallel training).
pub trait DevicesJob {
    /// What the job returns.
    type Output;
    /// Run the job on backend `B` and `devices` (at least one).
    fn run<B: AutodiffBackend>(self, backend: BackendName, devices: Vec<B::Device>)
        -> Self::Output;
}

/// A [`BackendJob`] as a [`DevicesJob`] on one device.
struct OnOne<J>(J);

impl<J: BackendJob> DevicesJob for OnOne<J> {
    type Output = J::Output;
    fn run<B: AutodiffBackend>(self, backend: BackendName, devices: Vec<B::Device>) -> J::Output {
        let device = devices.into_iter().next().expect("one device");
        self.0.run::<B>(backend, device)
    }
}

/// Devices of one backend named on the command line: `cuda:0,cuda:1`, `wgpu:1`, `flex,flex` (several CPU
/// peers). An entry without an index is the backend's default device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// The backend of every entry.
    pub backend: BackendName,
    /// Each entry's device index (`None`: the default device).
    pub indices: Vec<Option<u16>>,
}

impl std::str::FromStr for DeviceList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut backend = None;
        let mut indices = Vec::new();
        for entry in s.split(',').map(str::trim) {
            let (name, index) = match entry.split_once(':') {
                Some((name, index)) => {
                    let index = index.parse::<u16>().map_err(|_| {
                        format!(
                            "`{entry}`: the device index after `:` must be a number (e.g. cuda:0)"
                        )
                    })?;
                    (name, Some(index))
                }
                None => (entry, None),
            };
            let name = BackendName::ALL
                .into_iter()
                .find(|b| b.as_str() == name)
                .ok_or_else(|| {
                    format!(
                        "`{entry}`: unknown backend `{name}` (one of: {})",
                        BackendName::ALL.map(BackendName::as_str).join(", ")
                    )
                })?;
            if backend.is_some_and(|b| b != name) {
                return Err(format!(
                    "`{s}`: every device must be of the same backend (data-parallel peers run one model type)"
                ));
            }
            backend = Some(name);
            indices.push(index);
        }
        Ok(Self {
            backend: backend.ok_or_else(|| "no device given".to_string())?,
            indices,
        })
    }
}

/// Run `job` on the backend named `name`, after checking that the backend can start.
pub fn run_on<J: BackendJob>(name: BackendName, job: J) -> Result<J::Output, BackendError> {
    run_on_devices(
        &DeviceList {
            backend: name,
            indices: vec![None],
        },
        OnOne(job),
    )
}

/// Run `job` on the devices of `devices`, after checking that each can start.
pub fn run_on_devices<J: DevicesJob>(
    devices: &DeviceList,
    job: J,
) -> Result<J::Output, BackendError> {
    let name = devices.backend;
    name.ensure_compiled()?;
    let indices = &devices.indices;
    match name {
        #[cfg(feature = "flex")]
        BackendName::Flex => {
            start::<burn::backend::Autodiff<burn::backend::Flex>, J>(name, indices, job)
        }
        #[cfg(feature = "ndarray")]
        BackendName::Ndarray => {
            start::<burn::backend::Autodiff<burn::backend::NdArray>, J>(name, indices, job)
        }
        #[cfg(feature = "wgpu")]
        BackendName::Wgpu => {
            start::<burn::backend::Autodiff<burn::backend::Wgpu>, J>(name, indices, job)
        }
        #[cfg(feature = "vulkan")]
        BackendName::Vulkan => {
            start::<burn::backend::Autodiff<burn::backend::Vulkan>, J>(name, indices, job)
        }
        #[cfg(feature = "cuda")]
        BackendName::Cuda => {
            if let Some(reason) = missing_cuda_library() {
                return Err(BackendError::Unavailable { name, reason });
            }
            start::<burn::backend::Autodiff<burn::backend::Cuda>, J>(name, indices, job)
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked by BackendName::compiled"),
    }
}

/// The device of `index` (`None`: the default device): the discrete GPU / CUDA device of that index; CPU
/// backends have one device whatever the index.
fn device_at<D: DeviceOps>(index: Option<u16>) -> D {
    match index {
        None => D::default(),
        Some(i) => D::from_id(DeviceId::new(0, i)),
    }
}

/// Probe each device with a tiny computation (GPU runtimes initialise lazily and panic when no driver or
/// adapter is found), then run the job.
fn start<B: AutodiffBackend, J: DevicesJob>(
    name: BackendName,
    indices: &[Option<u16>],
    job: J,
) -> Result<J::Output, BackendError> {
    let devices: Vec<B::Device> = indices.iter().map(|&i| device_at(i)).collect();
    for device in &devices {
        probe::<B>(device).map_err(|reason| BackendError::Unavailable {
            name,
            reason: if devices.len() > 1 {
                format!("{device:?}: {reason}")
            } else {
                reason
            },
        })?;
    }
    tracing::info!(backend = %name, devices = ?devices, "backend ready");
    Ok(job.run::<B>(name, devices))
}

thread_local! {
    static PROBING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is probing a device right now. A panic of the runtime there is caught and returned as
/// [`BackendError::Unavailable`]; a panic hook may stay silent for it, as the `hst` binary's does. (The probe
/// leaves the process's panic hook alone: that belongs to the application.)
pub fn probing() -> bool {
    PROBING.with(std::cell::Cell::get)
}

/// Run `1 + 1` on the device, turning a panic of the runtime into an error message.
fn probe<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    let device = device.clone();
    PROBING.with(|p| p.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let x = Tensor::<B, 1>::ones([2], &device);
        (x.clone() + x).into_data().to_vec::<f32>()
    }));
    PROBING.with(|p| p.set(false));
    match result {
        Ok(Ok(v)) if v == [2.0, 2.0] => Ok(()),
        Ok(Ok(v)) => Err(format!("the device computed 1 + 1 = {v:?}")),
        Ok(Err(e)) => Err(format!("could not read back a tensor: {e:?}")),
        Err(panic) => Err(panic_message(panic.as_ref())),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the runtime panicked while initialising the device".to_string()
    }
}

/// `Some(reason)` when the CUDA driver or NVRTC cannot be loaded (checked before the runtime panics on it).
#[cfg(feature = "cuda")]
fn missing_cuda_library() -> Option<String> {
    let loadable = |names: &[&str]| {
        names
            .iter()
            .any(|n| unsafe { libloading::Library::new(n) }.is_ok())
    };
    if !loadable(&["libcuda.so.1", "libcuda.so"]) {
        return Some("the NVIDIA driver library libcuda.so could not be loaded (no NVIDIA driver installed?)".into());
    }
    if !loadable(&[
        "libnvrtc.so",
        "libnvrtc.so.13",
        "libnvrtc.so.12",
        "libnvrtc.so.11",
    ]) {
        return Some(
            "the CUDA runtime compiler libnvrtc.so could not be loaded (install the CUDA toolkit or put libnvrtc on \
             LD_LIBRARY_PATH)"
                .into(),
        );
    }
    None
}

/// Why a training configuration is not verified on `backend`, or `None` when it is.
///
/// Verified means: its forward pass, every loss term and every gradient were checked against flex on this
/// backend (`hst bench --check`, `tests/wgpu_smoke.rs`), flex itself being checked against the reference's
/// fixtures. As of this version: flex and ndarray everything; WGPU with WGSL shaders (a binary built with
/// `wgpu` and without `vulkan`), ResNet and EfficientNet-Lite trunks, frozen or trainable (checked on Mesa's
/// lavapipe in CI, with the project's workarounds of burn 0.21 WGPU bugs). SPIR-V (the `vulkan` feature,
/// which also turns the `wgpu` backend's Vulkan shaders into SPIR-V) and CUDA have not been checked.
pub fn unverified_reason(
    backend: BackendName,
    trunk: &hst_backbone::trunk::TrunkConfig,
) -> Option<String> {
    let _ = trunk; // Every trunk kind is verified, or none, on each backend as of this version.
    let spirv = cfg!(feature = "vulkan");
    match backend {
        BackendName::Flex | BackendName::Ndarray => None,
        BackendName::Wgpu | BackendName::Vulkan if spirv => Some(format!(
            "this binary has the `vulkan` feature, so {backend} compiles SPIR-V shaders, which have not been \
             checked against flex (WGSL has: build without `vulkan` for it); check yours first with \
             `hst bench --check --backend {backend} --config …`"
        )),
        BackendName::Wgpu | BackendName::Vulkan => None,
        BackendName::Cuda => Some(
            "no configuration has been checked against flex on cuda yet; check yours first with \
             `hst bench --check --backend cuda --config …`"
                .to_string(),
        ),
    }
}
