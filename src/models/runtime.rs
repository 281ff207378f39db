//! The process-wide ONNX Runtime environment, loaded from a shared library found at run time.

use super::ModelError;
use ort::ep::ExecutionProvider;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What was loaded, for logs and `mlink profile`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RuntimeInfo {
    /// The shared library in use.
    pub library: PathBuf,
    /// `CUDAExecutionProvider` when the library has it, else `CPUExecutionProvider`.
    pub provider: &'static str,
}

struct Runtime {
    info: RuntimeInfo,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Loads ONNX Runtime once per process: `ORT_DYLIB_PATH` when set, otherwise the project's
/// `.venv` (relative to the current directory, then to the crate root). A missing library is an
/// error naming every place looked in; later calls return the first call's outcome.
pub fn init_runtime() -> Result<RuntimeInfo, ModelError> {
    match RUNTIME.get_or_init(|| load().map_err(|e| e.to_string())) {
        Ok(rt) => Ok(rt.info.clone()),
        Err(message) => Err(ModelError::Runtime(message.clone())),
    }
}

/// The environment sessions are built in; loads the runtime on first use.
pub fn environment() -> Result<&'static ort::environment::Environment, ModelError> {
    init_runtime()?;
    match RUNTIME.get() {
        Some(Ok(rt)) => Ok(&rt.env),
        Some(Err(message)) => Err(ModelError::Runtime(message.clone())),
        None => Err(ModelError::Runtime(
            "ONNX Runtime is not initialised".into(),
        )),
    }
}

pub(crate) fn cuda_available() -> bool {
    matches!(RUNTIME.get(), Some(Ok(rt)) if rt.info.provider == "CUDAExecutionProvider")
}

fn load() -> Result<Runtime, ModelError> {
    super::cost::pin_mmap_threshold();
    let library = find_library()?;
    let builder = ort::init_from(&library).map_err(|e| ModelError::RuntimeLoad {
        path: library.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("mlink")
        .build()
        .map_err(|e| ModelError::RuntimeLoad {
            path: library.clone(),
            message: e.to_string(),
        })?;
    let provider = if ort::ep::CUDA::is_available().unwrap_or(false) {
        "CUDAExecutionProvider"
    } else {
        "CPUExecutionProvider"
    };
    tracing::info!(library = %library.display(), provider, "ONNX Runtime loaded");
    Ok(Runtime {
        info: RuntimeInfo { library, provider },
        env,
    })
}

fn find_library() -> Result<PathBuf, ModelError> {
    let mut looked_in = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        looked_in.push(format!("ORT_DYLIB_PATH={}", p.display()));
        // An explicit path that does not exist is an error, not a reason to look elsewhere.
        return Err(ModelError::RuntimeMissing { looked_in });
    }
    let roots = [
        std::env::current_dir().unwrap_or_default(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ];
    for root in roots {
        let lib = root.join(".venv/lib");
        looked_in.push(format!(
            "{}/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*",
            lib.display()
        ));
        if let Some(p) = find_in_venv(&lib) {
            return Ok(p);
        }
    }
    Err(ModelError::RuntimeMissing { looked_in })
}

fn find_in_venv(lib: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .flat_map(|e| {
            let capi = e.path().join("site-packages/onnxruntime/capi");
            std::fs::read_dir(capi).into_iter().flatten().flatten()
        })
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .collect();
    // Prefer the fully versioned file name (the real library, not a link).
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}
