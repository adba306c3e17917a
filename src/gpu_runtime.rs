//! The CubeCL (WGPU, Vulkan, CUDA) runtime policy of the `hst` binary: autotune level and persistent caches.
//!
//! CubeCL picks many GPU kernels (convolutions, matmuls, reductions) by compiling and timing candidates the
//! first time a shape is seen (autotuning), and compiles every kernel at first use. On a fresh machine that is
//! what the first training steps spend their time on (an H100 run measured ~5 s per convolution shape with
//! NVRTC). The policy:
//!
//! - **level** `minimal` unless `CUBECL_AUTOTUNE_LEVEL` says otherwise (`minimal|balanced|extensive|full`):
//!   the fewest candidates per shape, so a cold start stays bounded; `hst warmup --autotune-level balanced`
//!   tunes harder once, ahead of training;
//! - **one persistent cache folder** for the autotune results and the compiled kernels (PTX for CUDA, SPIR-V
//!   for Vulkan): `$HST_GPU_CACHE`, else the user cache directory (`~/.cache/hst/cubecl` on Linux). It
//!   survives runs, so only the first run on a machine pays; `hst warmup` fills it ahead of training.
//! - a `cubecl.toml`/`burn.toml` in the working directory or above it wins: the policy is then not applied
//!   (CubeCL reads that file), and the caches are where that file says.
//!
//! Library users who want the same policy call [`apply`] at the start of their program, before the first GPU
//! tensor is made.

use std::path::{Path, PathBuf};

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRuntimeSetup {
    /// The policy was applied: autotune level and cache folder.
    Applied {
        /// `minimal`, `balanced`, `extensive` or `full`.
        level: String,
        /// The persistent cache folder (autotune results and compiled kernels).
        cache: PathBuf,
    },
    /// A CubeCL configuration file was found and left in charge.
    ConfigFile(PathBuf),
    /// CubeCL's configuration was already fixed (read or set) before [`apply`] ran.
    AlreadyFixed,
    /// This binary has no CubeCL backend.
    NoGpuBackend,
}

impl std::fmt::Display for GpuRuntimeSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Applied { level, cache } => {
                write!(f, "autotune level {level}, cache {}", cache.display())
            }
            Self::ConfigFile(p) => write!(f, "CubeCL configuration from {}", p.display()),
            Self::AlreadyFixed => write!(f, "CubeCL configuration fixed before hst set it"),
            Self::NoGpuBackend => write!(f, "no GPU backend compiled in"),
        }
    }
}

/// The autotune level of the policy: `requested` (e.g. `hst warmup --autotune-level`), else
/// `CUBECL_AUTOTUNE_LEVEL`, else `minimal`.
///
/// # Errors
/// An unknown level name.
pub fn level(requested: Option<&str>) -> Result<String, String> {
    let env = std::env::var("CUBECL_AUTOTUNE_LEVEL").ok();
    let name = requested.or(env.as_deref()).unwrap_or("minimal");
    match name {
        "minimal" | "0" => Ok("minimal".into()),
        "balanced" | "1" => Ok("balanced".into()),
        "extensive" | "2" => Ok("extensive".into()),
        "full" | "3" => Ok("full".into()),
        other => Err(format!(
            "unknown autotune level `{other}` (minimal, balanced, extensive, full)"
        )),
    }
}

/// The persistent cache folder: `$HST_GPU_CACHE`, else `<user cache dir>/hst/cubecl`, else `./target/hst-cubecl`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HST_GPU_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .map(|d| d.join("hst").join("cubecl"))
        .unwrap_or_else(|| PathBuf::from("target").join("hst-cubecl"))
}

/// A CubeCL configuration file in `dir` or above it (the names CubeCL looks for).
pub fn config_file(dir: &Path) -> Option<PathBuf> {
    const NAMES: [&str; 4] = ["cubecl.toml", "CubeCL.toml", "burn.toml", "Burn.toml"];
    dir.ancestors()
        .flat_map(|d| NAMES.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// Apply the policy (see the module doc) with autotune level `requested` (else the environment's, else
/// `minimal`). Must run before the first GPU tensor; later calls report [`GpuRuntimeSetup::AlreadyFixed`].
///
/// # Errors
/// An unknown level name.
pub fn apply(requested: Option<&str>) -> Result<GpuRuntimeSetup, String> {
    let level = level(requested)?;
    apply_level(level)
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
fn apply_level(level: String) -> Result<GpuRuntimeSetup, String> {
    use burn::cubecl::config::autotune::AutotuneLevel;
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

    if let Some(file) = std::env::current_dir().ok().and_then(|d| config_file(&d)) {
        return Ok(GpuRuntimeSetup::ConfigFile(file));
    }
    let mut storage = CubeClRuntimeConfig::storage().lock();
    if storage.is_some() {
        return Ok(GpuRuntimeSetup::AlreadyFixed);
    }
    let cache = cache_dir();
    let mut config = CubeClRuntimeConfig::default();
    config.autotune.level = match level.as_str() {
        "balanced" => AutotuneLevel::Balanced,
        "extensive" => AutotuneLevel::Extensive,
        "full" => AutotuneLevel::Full,
        _ => AutotuneLevel::Minimal,
    };
    config.autotune.cache = CacheConfig::File(cache.clone());
    config.compilation.cache = Some(CacheConfig::File(cache.clone()));
    *storage = Some(std::sync::Arc::new(config));
    tracing::info!(level = %level, cache = %cache.display(), "CubeCL runtime policy applied");
    Ok(GpuRuntimeSetup::Applied { level, cache })
}

#[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "cuda")))]
fn apply_level(_level: String) -> Result<GpuRuntimeSetup, String> {
    Ok(GpuRuntimeSetup::NoGpuBackend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_and_numbers() {
        assert_eq!(level(Some("balanced")).unwrap(), "balanced");
        assert_eq!(level(Some("3")).unwrap(), "full");
        assert!(level(Some("max"))
            .unwrap_err()
            .contains("unknown autotune level `max`"));
    }

    #[test]
    fn config_files_are_found_above() {
        let root = std::env::temp_dir().join(format!("hst-gpu-runtime-{}", std::process::id()));
        let deep = root.join("a").join("b");
        std::fs::create_dir_all(&deep).unwrap();
        let above = config_file(&root); // whatever sits above the temp folder, usually nothing
        assert_eq!(config_file(&deep), above);
        std::fs::write(root.join("burn.toml"), "[cubecl]\n").unwrap();
        assert_eq!(config_file(&deep), Some(root.join("burn.toml")));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
