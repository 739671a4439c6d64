#!/usr/bin/env bash
# The whole test suite, on a fresh machine: checks what the tests need,
# installs what is missing, then runs `cargo test --workspace` (extra
# arguments go to cargo test, e.g. `./test.sh -- languages`).
#
# Needed: the wasm32-wasip2 Rust target (rustup), clang + lld + wasi-libc
# (C guests), Chromium (the web UI's browser test), Python 3 with venv
# (componentize-py), Node.js with npm (componentize-js) and PostgreSQL 15
# (the several-hosts tests start their own server from Debian's binaries).
# Where one is missing and cannot be installed (no root, no sudo, no network), this
# stops before building anything and prints one line per missing tool with
# the command that installs it.
set -euo pipefail
cd "$(dirname "$0")"

# Versions the tests use (tests/e2e/languages.rs, tests/e2e/ui.rs).
COMPONENTIZE_PY="componentize-py==0.25.1"
COMPONENTIZE_JS="@bytecodealliance/componentize-js@0.23.0"
PLAYWRIGHT="playwright-core@1"
DEBIAN_PACKAGES=(clang lld wasi-libc libclang-rt-dev-wasm32 make chromium postgresql-15)

say() { printf 'test.sh: %s\n' "$*" >&2; }

has_wasip2() { rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; }
has_c_tools() {
    command -v clang >/dev/null && command -v wasm-ld >/dev/null && command -v make >/dev/null \
        && [ -e /usr/include/wasm32-wasi/stdio.h ] \
        && compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null
}
has_chromium() { [ -x "${CAIRN_CHROMIUM:-/usr/bin/chromium}" ]; }
has_python() { command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; }
has_npm() { command -v node >/dev/null && command -v npm >/dev/null; }
has_postgres() { [ -n "${CAIRN_PG_BIN:-}" ] || compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; }

# How to run a root command here: as root, through sudo, or not at all.
as_root=""
if [ "$(id -u)" = 0 ]; then
    as_root="env"
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root="sudo"
fi

missing_debian=()
has_c_tools || missing_debian+=(clang lld wasi-libc libclang-rt-dev-wasm32 make)
has_chromium || missing_debian+=(chromium)
has_python || missing_debian+=(python3 python3-venv)
has_npm || missing_debian+=(nodejs npm)
has_postgres || missing_debian+=(postgresql-15)

if ! has_wasip2; then
    say "adding the wasm32-wasip2 target"
    command -v rustup >/dev/null && { rustup target add wasm32-wasip2 >&2 || true; }
fi

if [ ${#missing_debian[@]} -gt 0 ] && [ -n "$as_root" ] && command -v apt-get >/dev/null; then
    say "installing ${missing_debian[*]} with apt-get"
    $as_root apt-get update -q >&2 || true
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q "${missing_debian[@]}" >&2 || true
fi

# What is still missing is reported, one line each, before anything builds.
problems=()
has_wasip2 || problems+=("the wasm32-wasip2 Rust target: rustup target add wasm32-wasip2")
has_c_tools || problems+=("clang, lld and wasi-libc (C guests): sudo apt-get install clang lld wasi-libc libclang-rt-dev-wasm32 make")
has_chromium || problems+=("Chromium (the web UI test): sudo apt-get install chromium (or set CAIRN_CHROMIUM to a Chromium binary)")
has_python || problems+=("Python 3 with venv (componentize-py): sudo apt-get install python3 python3-venv")
has_npm || problems+=("Node.js and npm (componentize-js): sudo apt-get install nodejs npm")
has_postgres || problems+=("PostgreSQL 15 (the several-hosts tests): sudo apt-get install postgresql-15 (or set CAIRN_PG_BIN to a directory with initdb and postgres)")

# The guest toolchains the language tests use, installed where the tests
# look for them (tests/e2e/languages.rs), once.
if has_python && ! command -v componentize-py >/dev/null && [ ! -x target/pyenv/bin/componentize-py ]; then
    say "installing $COMPONENTIZE_PY into target/pyenv"
    mkdir -p target
    if ! { python3 -m venv target/pyenv && target/pyenv/bin/pip install --quiet "$COMPONENTIZE_PY"; } >&2; then
        problems+=("componentize-py (Python guests): python3 -m venv target/pyenv && target/pyenv/bin/pip install '$COMPONENTIZE_PY' (needs PyPI)")
    fi
fi
if has_npm && [ -z "${CAIRN_COMPONENTIZE_JS:-}" ] \
    && [ ! -e target/jsenv/node_modules/@bytecodealliance/componentize-js/src/cli.js ]; then
    say "installing $COMPONENTIZE_JS into target/jsenv"
    mkdir -p target/jsenv
    if ! (cd target/jsenv && npm install --silent --no-audit --no-fund "$COMPONENTIZE_JS") >&2; then
        problems+=("componentize-js (JavaScript guests): mkdir -p target/jsenv && cd target/jsenv && npm install '$COMPONENTIZE_JS' (needs the npm registry)")
    fi
fi
if has_npm && [ ! -d target/uienv/node_modules/playwright-core ]; then
    say "installing $PLAYWRIGHT into target/uienv"
    mkdir -p target/uienv
    if ! (cd target/uienv && npm install --silent --no-audit --no-fund "$PLAYWRIGHT") >&2; then
        problems+=("playwright-core (the web UI test drives Chromium with it): mkdir -p target/uienv && cd target/uienv && npm install '$PLAYWRIGHT' (needs the npm registry)")
    fi
fi

if [ ${#problems[@]} -gt 0 ]; then
    say "cannot run the whole suite; missing:"
    for p in "${problems[@]}"; do
        printf '  missing %s\n' "$p" >&2
    done
    exit 2
fi

exec cargo test --workspace "$@"
