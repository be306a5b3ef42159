# One command per job; `make` builds everything. Needs only Rust (rustup).
CARGO ?= cargo
PLUGIN_DIR := target/wasm32-wasip2/plugin
PLUGINS := echo counter buffered-counter processor-template faulty counter-v2
# The host `make demo` runs (the release build unless told otherwise).
HOST ?= target/release/host

.PHONY: all build plugins pyenv python-plugins js-sdk-packages js-plugins host bench-bin test lint bench demo wasm-target clean

all: build

build: plugins host

# The wasm target is installed on first use.
wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Components land in $(PLUGIN_DIR)/<name>.wasm (dashes become underscores).
plugins: wasm-target
	$(CARGO) build --profile plugin --target wasm32-wasip2 $(addprefix -p ,$(PLUGINS))

# The Python that the tests and the Python components use: target/pyenv with
# the pinned packages (plugins/sdk-python/requirements-build.txt,
# host/tests/requirements.txt), made on first use and when a pin changes.
pyenv:
	@host/tests/pyenv.sh

# The Python examples and the Python test fixture (plugins/sdk-python), as
# $(PLUGIN_DIR)/py_<name>.wasm, then the SDK's unit tests. Without Python's
# venv module this is a recorded skip (an error under CI=true).
COMPONENTIZE_PY ?= $(CURDIR)/target/pyenv/bin/componentize-py
PY_SDK := plugins/sdk-python
python-plugins: pyenv
	@if [ -x "$(COMPONENTIZE_PY)" ] || command -v "$(COMPONENTIZE_PY)" >/dev/null; then \
		export COMPONENTIZE_PY="$(COMPONENTIZE_PY)"; \
		$(PY_SDK)/build.sh $(PY_SDK)/examples/echo $(PLUGIN_DIR)/py_echo.wasm && \
		$(PY_SDK)/build.sh $(PY_SDK)/examples/counter $(PLUGIN_DIR)/py_counter.wasm && \
		$(PY_SDK)/build.sh $(PY_SDK)/tests/faulty $(PLUGIN_DIR)/py_faulty.wasm && \
		python3 -m unittest discover -s $(PY_SDK)/tests; \
	else host/tests/skip.sh "python-plugins (py_*.wasm and the Python SDK's unit tests)" "no $(COMPONENTIZE_PY)"; fi

# The JavaScript SDK's build tools (componentize-js, esbuild: npm ci, pinned
# by its package-lock.json), installed on first use.
JS_SDK := plugins/sdk-js
js-sdk-packages:
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		[ -d $(JS_SDK)/node_modules/@bytecodealliance/componentize-js ] || \
			(cd $(JS_SDK) && npm ci --no-audit --no-fund --loglevel=error); \
	else host/tests/skip.sh "the JavaScript SDK's packages" "no node and npm (Debian: apt-get install nodejs npm)"; fi

# The JavaScript examples and test fixture (plugins/sdk-js), as
# $(PLUGIN_DIR)/js_<name>.wasm, then the SDK's unit tests (Node); a recorded
# skip without Node.
js-plugins: js-sdk-packages
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		node $(JS_SDK)/build.mjs $(JS_SDK)/examples/echo.js $(PLUGIN_DIR)/js_echo.wasm && \
		node $(JS_SDK)/build.mjs $(JS_SDK)/examples/counter.js $(PLUGIN_DIR)/js_counter.wasm && \
		node $(JS_SDK)/build.mjs $(JS_SDK)/tests/faulty.js $(PLUGIN_DIR)/js_faulty.wasm && \
		(cd $(JS_SDK) && node --test test/); \
	else host/tests/skip.sh "js-plugins (js_*.wasm and the JavaScript SDK's unit tests)" "no node and npm"; fi

host:
	$(CARGO) build --release -p host

# The demo: the embedded endpoint, seed 000's producers and the counter, live
# (`host dev`; Ctrl-C stops). DEMO_FLAGS adds flags, e.g. "--duration 30 --lag 20".
DEMO_FLAGS ?=
demo: plugins
	@if [ "$(HOST)" = target/release/host ]; then $(CARGO) build --release -p host; fi
	$(HOST) dev --plugin $(PLUGIN_DIR)/counter.wasm $(DEMO_FLAGS)

# Formatting and lints, as gates.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Everything, from any machine state: sets up what the tests need (target/pyenv,
# npm packages, the emulators), builds the plugins, the Python and JavaScript
# components and the tests once (clippy linting on the way), runs every test
# binary, and ends with where the time went and what was skipped (CI=true: a
# skip fails). host/tests/suite.sh says how.
test:
	@host/tests/suite.sh

# The benchmarks live in their own binary (host/bench), not in `host`.
bench-bin:
	$(CARGO) build --release -p host -p host-bench

bench: plugins bench-bin
	target/release/host-bench plugin --plugin $(PLUGIN_DIR)/counter.wasm

clean:
	$(CARGO) clean
