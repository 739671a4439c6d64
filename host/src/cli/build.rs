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
    } else if dir.join("Makefile").is_file() {
        Ok(Language::C)
    } else {
        bail!(
            "cannot tell the language of {}: expected Cargo.toml (Rust), app.py (Python), package.json (JavaScript) or a Makefile (C)",
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
            bail!("C guests are not supported by this version of `cairn build`; Rust, Python and JavaScript are")
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
