# One command per job; `make` builds everything. Needs only Rust (rustup).
CARGO ?= cargo
PLUGIN_DIR := target/wasm32-wasip2/plugin
PLUGINS := echo counter buffered-counter processor-template faulty counter-v2

.PHONY: all build plugins host test bench demo wasm-target clean

all: build

build: plugins host

# The wasm target is installed on first use.
wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Components land in $(PLUGIN_DIR)/<name>.wasm (dashes become underscores).
plugins: wasm-target
	$(CARGO) build --profile plugin --target wasm32-wasip2 $(addprefix -p ,$(PLUGINS))

host:
	$(CARGO) build --release -p host

# The demo: the embedded endpoint, seed 000's producers and the counter, live
# (`host dev`; Ctrl-C stops). DEMO_FLAGS adds flags, e.g. "--duration 30 --lag 20".
DEMO_FLAGS ?=
demo: build
	target/release/host dev --plugin $(PLUGIN_DIR)/counter.wasm $(DEMO_FLAGS)

# Unit tests of every crate, then the host's integration tests, which run the
# real plugin components (and the demo, so the release host is built first).
test: build
	host/tests/with-kinesis-mock.sh $(CARGO) test --workspace

bench: plugins
	$(CARGO) build --release -p host
	target/release/host bench --plugin $(PLUGIN_DIR)/counter.wasm

clean:
	$(CARGO) clean
