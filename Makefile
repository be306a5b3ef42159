# One command per job; `make` builds everything. Needs only Rust (rustup).
CARGO ?= cargo
PLUGIN_DIR := target/wasm32-wasip2/plugin
PLUGINS := echo counter buffered-counter processor-template faulty counter-v2
# The host `make demo` runs (the release build unless told otherwise).
HOST ?= target/release/host

.PHONY: all build plugins python-plugins js-plugins host bench-bin test lint bench demo wasm-target clean

all: build

build: plugins host

# The wasm target is installed on first use.
wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Components land in $(PLUGIN_DIR)/<name>.wasm (dashes become underscores).
plugins: wasm-target
	$(CARGO) build --profile plugin --target wasm32-wasip2 $(addprefix -p ,$(PLUGINS))

# The Python examples and the Python test fixture (plugins/sdk-python), as
# $(PLUGIN_DIR)/py_<name>.wasm; skipped (the tests say so) without
# componentize-py, which .ci/run installs into target/pyenv.
COMPONENTIZE_PY ?= $(CURDIR)/target/pyenv/bin/componentize-py
PY_SDK := plugins/sdk-python
python-plugins:
	@if [ -x "$(COMPONENTIZE_PY)" ] || command -v "$(COMPONENTIZE_PY)" >/dev/null; then \
		export COMPONENTIZE_PY="$(COMPONENTIZE_PY)"; \
		$(PY_SDK)/build.sh $(PY_SDK)/examples/echo $(PLUGIN_DIR)/py_echo.wasm && \
		$(PY_SDK)/build.sh $(PY_SDK)/examples/counter $(PLUGIN_DIR)/py_counter.wasm && \
		$(PY_SDK)/build.sh $(PY_SDK)/tests/faulty $(PLUGIN_DIR)/py_faulty.wasm; \
	else echo "python-plugins: skipped, no componentize-py (pip install componentize-py==0.25.1 into target/pyenv)"; fi
	python3 -m unittest discover -s $(PY_SDK)/tests

# The JavaScript examples and test fixture (plugins/sdk-js), as
# $(PLUGIN_DIR)/js_<name>.wasm: esbuild bundles, componentize-js 0.23.0
# builds (both pinned in its package-lock.json); skipped without Node.
JS_SDK := plugins/sdk-js
js-plugins:
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		if [ ! -d $(JS_SDK)/node_modules/@bytecodealliance/componentize-js ]; then \
			(cd $(JS_SDK) && npm ci --no-audit --no-fund --loglevel=error); fi && \
		node $(JS_SDK)/build.mjs $(JS_SDK)/examples/echo.js $(PLUGIN_DIR)/js_echo.wasm && \
		node $(JS_SDK)/build.mjs $(JS_SDK)/examples/counter.js $(PLUGIN_DIR)/js_counter.wasm && \
		node $(JS_SDK)/build.mjs $(JS_SDK)/tests/faulty.js $(PLUGIN_DIR)/js_faulty.wasm && \
		(cd $(JS_SDK) && node --test test/); \
	else echo "js-plugins: skipped, no node/npm"; fi

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

# The gates, unit tests of every crate, then the host's integration tests
# (one test binary, tests/it), which run the real plugin components.
test: plugins python-plugins js-plugins lint
	host/tests/with-emulators.sh $(CARGO) test --workspace

# The benchmarks live in their own binary (host/bench), not in `host`.
bench-bin:
	$(CARGO) build --release -p host -p host-bench

bench: plugins bench-bin
	target/release/host-bench plugin --plugin $(PLUGIN_DIR)/counter.wasm

clean:
	$(CARGO) clean
