//! `cairn build DIR`: builds a guest into a component with its language's
//! tool, checks it against the workflow or activity world, and writes it.

use super::LimitArgs;
use anyhow::{bail, Context};
use cairn_host::runtime::Runtime;
use cairn_host::store::Store;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The contract and the Python SDK travel inside the binary, so a build
/// works anywhere, not only in a checkout of this repository.
const WIT: &str = include_str!("../../../wit/cairn.wit");
const PYTHON_SDK: &str = include_str!("../../../guest-sdk/python/cairn.py");
/// The JavaScript SDK's modules, copied beside the app's own.
const JS_SDK: [(&str, &str); 3] = [
    ("cairn.js", include_str!("../../../guest-sdk/js/cairn.js")),
    ("cairn-activity.js", include_str!("../../../guest-sdk/js/cairn-activity.js")),
    ("failure.js", include_str!("../../../guest-sdk/js/failure.js")),
];

/// The C SDK: a header, a small JSON library and the glue for each world.
const C_SDK: [(&str, &str); 4] = [
    ("cairn.h", include_str!("../../../guest-sdk/c/cairn.h")),
    ("cairn_json.c", include_str!("../../../guest-sdk/c/cairn_json.c")),
    ("cairn_workflow.c", include_str!("../../../guest-sdk/c/cairn_workflow.c")),
    ("cairn_activity.c", include_str!("../../../guest-sdk/c/cairn_activity.c")),
];

/// Pinned so a component built today matches what the tests verified.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Language {
    Rust,
    Python,
    JavaScript,
    C,
}

fn detect(dir: &Path) -> anyhow::Result<Language> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Language::Rust)
    } else if dir.join("app.py").is_file() || dir.join("pyproject.toml").is_file() {
        Ok(Language::Python)
    } else if dir.join("package.json").is_file() {
        Ok(Language::JavaScript)
    } else if dir.join("Makefile").is_file() || dir.join("app.c").is_file() {
        Ok(Language::C)
    } else {
        bail!(
            "cannot tell the language of {}: expected Cargo.toml (Rust), app.py (Python), package.json (JavaScript) or a Makefile or app.c (C)",
            dir.display()
        )
    }
}

pub async fn build(dir: &Path, activity: Option<bool>, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.canonicalize().with_context(|| format!("cannot open {}", dir.display()))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "component".into());
    let language = detect(&dir)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let (built, is_activity) = match language {
        Language::Rust => build_rust(&dir)?,
        Language::Python => {
            let source = std::fs::read_to_string(dir.join("app.py")).unwrap_or_default();
            let is_activity = activity.unwrap_or_else(|| source.contains("cairn.activities("));
            (build_python(&dir, scratch.path(), is_activity)?, is_activity)
        }
        Language::JavaScript => {
            let sources = js_sources(&dir)?;
            let is_activity = activity.unwrap_or_else(|| sources.iter().any(|(_, text)| text.contains("activities(")));
            (build_js(&dir, &sources, scratch.path(), is_activity)?, is_activity)
        }
        Language::C => {
            let sources = c_sources(&dir)?;
            let is_activity = activity.unwrap_or_else(|| sources.iter().any(|text| text.contains("cairn_execute(")));
            (build_c(&dir, scratch.path(), is_activity)?, is_activity)
        }
    };
    let is_activity = activity.unwrap_or(is_activity);
    let bytes =
        std::fs::read(&built).with_context(|| format!("cannot read the built component {}", built.display()))?;
    check(&name, &bytes, is_activity).await?;
    let out = out.unwrap_or_else(|| dir.join("target").join("cairn").join(format!("{name}.wasm")));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Checks the component against its world, as an upload would be.
async fn check(name: &str, bytes: &[u8], is_activity: bool) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let runtime = Runtime::new(Store::open(scratch.path())?, LimitArgs::defaults())?;
    let component = runtime.components().load_transient(name, bytes.to_vec()).await?;
    if is_activity {
        runtime.activities().check(name, &component)?;
    } else {
        runtime.check_workflow(&component)?;
    }
    Ok(())
}

fn build_rust(dir: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if let Ok(o) = installed {
        if !String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "wasm32-wasip2") {
            bail!("the Rust target wasm32-wasip2 is not installed: run `rustup target add wasm32-wasip2`");
        }
    }
    let output = Command::new("cargo")
        .current_dir(dir)
        .args(["build", "--release", "--lib", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo: install Rust from https://rustup.rs")?;
    if !output.status.success() {
        bail!("cargo build failed in {}", dir.display());
    }
    let mut artifact = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str()) {
            if file.ends_with(".wasm") {
                artifact = Some(PathBuf::from(file));
            }
        }
    }
    let artifact = artifact.context("cargo built no .wasm file: is the crate a `cdylib`?")?;
    let source = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
    Ok((artifact, source.contains("activities!")))
}

fn componentize_py() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CAIRN_COMPONENTIZE_PY") {
        let path = PathBuf::from(path);
        // The build runs in a scratch directory: resolve a relative path now.
        return Ok(path.canonicalize().unwrap_or(path));
    }
    let found = Command::new("componentize-py").arg("--version").output();
    match found {
        Ok(o) if o.status.success() => Ok(PathBuf::from("componentize-py")),
        _ => bail!(
            "componentize-py is not installed: run `pip install {COMPONENTIZE_PY}` (or set CAIRN_COMPONENTIZE_PY to its path)"
        ),
    }
}

fn build_python(dir: &Path, scratch: &Path, is_activity: bool) -> anyhow::Result<PathBuf> {
    let tool = componentize_py()?;
    let wit = scratch.join("wit");
    let sdk = scratch.join("sdk");
    std::fs::create_dir_all(&wit)?;
    std::fs::create_dir_all(&sdk)?;
    std::fs::write(wit.join("cairn.wit"), WIT)?;
    std::fs::write(sdk.join("cairn.py"), PYTHON_SDK)?;
    let out = scratch.join("component.wasm");
    let world = if is_activity { "activity" } else { "workflow" };
    let status = Command::new(&tool)
        .current_dir(scratch)
        .arg("-d")
        .arg(&wit)
        .args(["-w", world, "componentize", "app", "-p"])
        .arg(dir)
        .arg("-p")
        .arg(&sdk)
        .arg("-o")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !status.success() {
        bail!("componentize-py failed to build {} (see its output above)", dir.display());
    }
    Ok(out)
}

fn componentize_js() -> anyhow::Result<Command> {
    if let Some(path) = std::env::var_os("CAIRN_COMPONENTIZE_JS") {
        let path = PathBuf::from(path);
        let path = path.canonicalize().unwrap_or(path);
        // Either the installed `componentize-js` command or its cli.js.
        if path.extension().is_some_and(|e| e == "js") {
            let mut node = Command::new("node");
            node.arg(path);
            return Ok(node);
        }
        return Ok(Command::new(path));
    }
    match Command::new("componentize-js").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(Command::new("componentize-js")),
        _ => bail!(
            "componentize-js is not installed: run `npm install -g @bytecodealliance/componentize-js@0.23.0` (or set CAIRN_COMPONENTIZE_JS to its cli.js)"
        ),
    }
}

/// The app's own top-level `.js` / `.mjs` files: (file name, text).
fn js_sources(dir: &Path) -> anyhow::Result<Vec<(std::ffi::OsString, String)>> {
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "js" || e == "mjs") {
            if let Some(name) = path.file_name() {
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                sources.push((name.to_owned(), text));
            }
        }
    }
    Ok(sources)
}

fn build_js(
    dir: &Path,
    sources: &[(std::ffi::OsString, String)],
    scratch: &Path,
    is_activity: bool,
) -> anyhow::Result<PathBuf> {
    let mut tool = componentize_js()?;
    let wit = scratch.join("wit");
    let src = scratch.join("src");
    std::fs::create_dir_all(&wit)?;
    std::fs::create_dir_all(&src)?;
    std::fs::write(wit.join("cairn.wit"), WIT)?;
    for (name, text) in sources {
        std::fs::write(src.join(name), text)?;
    }
    for (name, text) in JS_SDK {
        std::fs::write(src.join(name), text)?;
    }
    let package: serde_json::Value = std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let main = package["main"].as_str().unwrap_or("app.js");
    let out = scratch.join("component.wasm");
    // The host offers no outgoing HTTP to guests: leave fetch out.
    let status = tool
        .current_dir(&src)
        .arg(main)
        .arg("--wit")
        .arg(&wit)
        .args(["--world-name", if is_activity { "activity" } else { "workflow" }])
        .args(["--disable", "http", "fetch-event", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run componentize-js")?;
    if !status.success() {
        bail!("componentize-js failed to build {} (see its output above)", dir.display());
    }
    Ok(out)
}

/// The app's own top-level `.c` files, read to tell a workflow from an activity.
fn c_sources(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "c") {
            sources.push(std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?);
        }
    }
    if sources.is_empty() {
        bail!("{} holds no .c file: a C guest needs at least app.c", dir.display());
    }
    Ok(sources)
}

const C_TOOLS_HINT: &str = "install clang, lld and wasi-libc: on Debian or Ubuntu `apt-get install clang lld wasi-libc libclang-rt-dev-wasm32 make`";

/// A C guest: bindings from the embedded WIT (wit-bindgen's C generator),
/// the SDK, then clang to a core module (through the folder's Makefile when
/// it has one), then a component with the WASI preview1 adapter of the same
/// wasmtime release the host runs.
fn build_c(dir: &Path, scratch: &Path, is_activity: bool) -> anyhow::Result<PathBuf> {
    let cc = std::env::var("CC").ok().filter(|cc| !cc.is_empty() && cc != "cc").unwrap_or_else(|| "clang".into());
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => bail!("cannot run {cc}: {C_TOOLS_HINT}"),
    }
    let world_name = if is_activity { "activity" } else { "workflow" };
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("cairn.wit", WIT).context("the embedded WIT does not parse")?;
    let world = resolve.select_world(&[package], Some(world_name))?;
    let mut files = wit_bindgen_core::Files::default();
    let options = wit_bindgen_c::Opts::default();
    options.build().generate(&mut resolve, world, &mut files).context("generating the C bindings failed")?;

    let include = scratch.join("cairn-c");
    std::fs::create_dir_all(&include)?;
    let mut sources = Vec::new();
    for (name, contents) in files.iter() {
        std::fs::write(include.join(name), contents)?;
        // The bindings and the object carrying the world's type.
        if name.ends_with(".c") || name.ends_with(".o") {
            sources.push(include.join(name));
        }
    }
    let glue = if is_activity { "cairn_activity.c" } else { "cairn_workflow.c" };
    for (name, text) in C_SDK {
        std::fs::write(include.join(name), text)?;
        if name == "cairn_json.c" || name == glue {
            sources.push(include.join(name));
        }
    }

    let core = scratch.join("core.wasm");
    let status = if dir.join("Makefile").is_file() {
        // The Makefile gets the flags, the SDK's sources and where to write.
        let joined: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
        Command::new("make")
            .current_dir(dir)
            .arg("--no-print-directory")
            .arg(format!("CC={cc}"))
            .arg(format!("CAIRN_CFLAGS=--target=wasm32-wasi -mexec-model=reactor -I{}", include.display()))
            .arg(format!("CAIRN_SOURCES={}", joined.join(" ")))
            .arg(format!("CAIRN_CORE={}", core.display()))
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("cannot run make: {C_TOOLS_HINT}"))?
    } else {
        let mut clang = Command::new(&cc);
        clang.args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-I"]).arg(&include);
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "c") {
                clang.arg(path);
            }
        }
        clang.args(&sources).arg("-o").arg(&core).status().with_context(|| format!("cannot run {cc}"))?
    };
    if !status.success() {
        bail!(
            "compiling {} failed (see the compiler's output above); if wasi-libc or lld is missing, {C_TOOLS_HINT}",
            dir.display()
        );
    }
    let module = std::fs::read(&core).with_context(|| {
        format!("the build wrote no core module at {} (does the Makefile use $(CAIRN_CORE)?)", core.display())
    })?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .context("the core module is not a valid WebAssembly module for the C bindings")?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()
        .context("turning the core module into a component failed")?;
    let out = scratch.join("component.wasm");
    std::fs::write(&out, component)?;
    Ok(out)
}
