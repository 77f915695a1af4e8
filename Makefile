# Headroom's build. Every tool a target needs comes from go.mod or is
# installed here, so that a clean clone on a machine with Go works.

GO       ?= go
BIN      := bin/headroom
DATA_DIR ?= ./data
FUZZTIME ?= 30s

.PHONY: run build test vet bench soak fuzz proto tools ui clean

build:
	$(GO) build -o $(BIN) ./cmd/headroom

# Serves $(DATA_DIR) on 127.0.0.1: gRPC and OTLP on :4317, remote-write
# and /metrics on :9090. Ctrl-C stops it cleanly. ARGS passes more flags.
run: build
	./$(BIN) serve --data-dir $(DATA_DIR) $(ARGS)

# -stdmethods=false: our iterators' Seek(t int64) bool is the time-series
# contract (as in Prometheus), not io.Seeker; vet's check for io.Seeker's
# signature would flag every iterator. All other vet checks run.
vet:
	gofmt -l . | (! grep .) || (echo "gofmt needed on the files above"; exit 1)
	$(GO) vet -stdmethods=false ./...

# HEADROOM_REQUIRE_TOOLS: the tests that need Chromium or the console's
# build tools fail, rather than skip, when they are missing.
test: tools vet
	HEADROOM_REQUIRE_TOOLS=1 $(GO) test -race -timeout 20m ./...

# protoc comes from Debian (3.21.12 on bookworm; the generated code records
# the version); the Go plugins are pinned in go.mod's tool block. The proto
# package's test regenerates the code and needs protoc. Chromium (Debian's
# package) renders the HTML reports in the browser tests.
tools:
	@command -v protoc >/dev/null 2>&1 || { \
		echo "installing protoc (protobuf-compiler) with apt-get"; \
		apt-get update -qq && apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium with apt-get"; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@test -d ui/node_modules/esbuild || { \
		echo "installing the console's build tools (npm ci in ui/)"; \
		cd ui && npm ci --no-audit --no-fund >/dev/null; }

# The web console: ui/dist (committed, embedded in the binary) from
# ui/src with esbuild and the packages ui/package-lock.json pins. go
# build and make run need no Node.js; ui's test fails if dist is stale.
ui:
	cd ui && npm ci --no-audit --no-fund && npm run build

# The benchmark harness: prints a table; see bench/RESULTS.md. The real
# datasets are not in the repository (bench/DATASETS.md): without them,
# their rows are skipped with a message.
DATASETS ?= ../shared/datasets
bench:
	$(GO) run ./bench -datasets $(DATASETS)

# The long runs of issue 6, without the race detector so that memory
# figures mean something: SOAK_CYCLES kill -9 cycles of the real server
# under gRPC and remote-write writers (make test runs 3), and the
# overload runs (200 writers and 50 heavy queries on a 512 MiB budget;
# heavy queries on a 224 MiB one).
SOAK_CYCLES ?= 25
soak:
	HEADROOM_SOAK_CYCLES=$(SOAK_CYCLES) $(GO) test -count=1 -timeout 60m -run '^(TestCrashLoop|TestOverload|TestOverloadMemory)$$' -v ./cmd/headroom | grep -v '^=== RUN'

# Each fuzz target for a bounded time (FUZZTIME); `make test` runs their
# seed corpora. The cluster package's test binary holds a NATS server:
# minimizing each new input in it took up to a minute and stalled the
# run (11 executions in 30 s), so its targets keep inputs unminimized.
CLUSTER_FUZZ = -fuzzminimizetime=0
fuzz:
	$(GO) test -run=NONE -fuzz='^FuzzIterator$$' -fuzztime=$(FUZZTIME) ./storage/chunk
	$(GO) test -run=NONE -fuzz='^FuzzDecodeBlock$$' -fuzztime=$(FUZZTIME) ./storage/rollup
	$(GO) test -run=NONE -fuzz='^FuzzDecodeSketch$$' -fuzztime=$(FUZZTIME) ./storage/rollup
	$(GO) test -run=NONE -fuzz='^FuzzDecodeColumnsV2$$' -fuzztime=$(FUZZTIME) ./storage/rollup
	$(GO) test -run=NONE -fuzz='^FuzzHistBlock$$' -fuzztime=$(FUZZTIME) ./storage/rollup
	$(GO) test -run=NONE -fuzz='^FuzzHistogramChunk$$' -fuzztime=$(FUZZTIME) ./storage/chunk
	$(GO) test -run=NONE -fuzz='^FuzzLoadTimeValueCSV$$' -fuzztime=$(FUZZTIME) ./bench
	$(GO) test -run=NONE -fuzz='^FuzzRemoteWrite$$' -fuzztime=$(FUZZTIME) ./ingest
	$(GO) test -run=NONE -fuzz='^FuzzRemoteWrite2$$' -fuzztime=$(FUZZTIME) ./ingest
	$(GO) test -run=NONE -fuzz='^FuzzDecodeBatch$$' -fuzztime=$(FUZZTIME) $(CLUSTER_FUZZ) ./cluster
	$(GO) test -run=NONE -fuzz='^FuzzSelectResponse$$' -fuzztime=$(FUZZTIME) $(CLUSTER_FUZZ) ./cluster
	$(GO) test -run=NONE -fuzz='^FuzzRollupResponse$$' -fuzztime=$(FUZZTIME) $(CLUSTER_FUZZ) ./cluster
	$(GO) test -run=NONE -fuzz='^FuzzExemplarsResponse$$' -fuzztime=$(FUZZTIME) $(CLUSTER_FUZZ) ./cluster
	$(GO) test -run=NONE -fuzz='^FuzzCheckSeriesRequest$$' -fuzztime=$(FUZZTIME) $(CLUSTER_FUZZ) ./cluster
	$(GO) test -run=NONE -fuzz='^FuzzOTLP$$' -fuzztime=$(FUZZTIME) ./ingest
	$(GO) test -run=NONE -fuzz='^FuzzWireDecode$$' -fuzztime=$(FUZZTIME) ./ingest
	$(GO) test -run=NONE -fuzz='^FuzzOTLPWire$$' -fuzztime=$(FUZZTIME) ./ingest
	$(GO) test -run=NONE -fuzz='^FuzzQuery$$' -fuzztime=$(FUZZTIME) ./query
	$(GO) test -run=NONE -fuzz='^FuzzAPIParams$$' -fuzztime=$(FUZZTIME) ./query/api
	$(GO) test -run=NONE -fuzz='^FuzzCSV$$' -fuzztime=$(FUZZTIME) ./ingest/backfill
	$(GO) test -run=NONE -fuzz='^FuzzReplay$$' -fuzztime=$(FUZZTIME) ./storage/wal
	$(GO) test -run=NONE -fuzz='^FuzzPromText$$' -fuzztime=$(FUZZTIME) ./ingest/backfill

# Regenerates the committed Go code of every .proto under proto/.
proto: tools
	bash proto/gen.sh

clean:
	rm -rf bin
