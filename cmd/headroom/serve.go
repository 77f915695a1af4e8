package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	// The OpenTelemetry Collector's otlp exporter compresses with gzip by
	// default; gRPC enforces --max-request-bytes on the decompressed size.
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/headroomdb/headroom/admit"
	"github.com/headroomdb/headroom/auth"
	"github.com/headroomdb/headroom/cluster"
	"github.com/headroomdb/headroom/exemplar"
	"github.com/headroomdb/headroom/ingest"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/api"
	"github.com/headroomdb/headroom/query/report"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
	"github.com/headroomdb/headroom/ui"
)

// serveConfig is every option of `headroom serve`; each is a flag and a
// key of the config file.
type serveConfig struct {
	configFile      string
	dataDir         string
	listen          string
	grpcPort        int
	httpPort        int
	retention       time.Duration
	tiers           []storage.Tier
	rules           []string
	rollupInterval  time.Duration
	rollupDelay     time.Duration
	rollupQuiet     time.Duration
	checkpoint      time.Duration
	rollupWorkers   int
	tokensFile      string
	tlsCert         string
	tlsKey          string
	maxRequestBytes int
	bodyTimeout     time.Duration
	limits          ingest.Limits
	maxActive       int
	maxActiveMetric int
	promote         string
	shutdownTimeout time.Duration
	maxConcurrent   int
	queueTimeout    time.Duration
	maxQueries      int
	queryQueue      time.Duration
	memoryLimit     int64
	minFreeDisk     int64
	queryTimeout    time.Duration
	queryMaxSamples int
	queryMaxSeries  int
	lookback        time.Duration
	queryFeatures   []string
	exemplars       int // per series
	maxExemplars    int
	logLevel        string
	pprof           bool
	forecastWatches []string
	forecastEvery   time.Duration
	forecastRange   time.Duration
	cluster         clusterFlags
	// flags: the set these were parsed from, for /api/v1/status/flags.
	flags *flag.FlagSet
}

func serveFlags(fs *flag.FlagSet) *serveConfig {
	c := &serveConfig{flags: fs, retention: 15 * 24 * time.Hour, shutdownTimeout: 30 * time.Second, minFreeDisk: 256 << 20,
		tiers: storage.DefaultTiers, rollupInterval: time.Minute, rollupDelay: 5 * time.Minute, rollupQuiet: 2 * time.Minute,
		checkpoint: time.Minute}
	fs.StringVar(&c.configFile, "config", "", "YAML file setting any of these options by flag name (data-dir: /var/lib/headroom); flags given on the command line win")
	fs.StringVar(&c.dataDir, "data-dir", "./data", "data directory (created if missing; locked while the server runs)")
	fs.StringVar(&c.listen, "listen", "127.0.0.1", "address both ports bind to; 0.0.0.0 or :: to accept other machines")
	fs.IntVar(&c.grpcPort, "grpc-port", 4317, "gRPC port: headroom.v1.Ingest and OTLP metrics (4317 is OTLP's port)")
	fs.IntVar(&c.httpPort, "http-port", 9090, "HTTP port: remote-write, /metrics, /healthz, /readyz (9090 is Prometheus's port)")
	fs.Var(durationFlag{&c.retention}, "retention", "how long raw samples are kept (units ms s m h d w y); older samples are refused; days not yet rolled up are kept until they are")
	fs.Var(tiersFlag{&c.tiers}, "rollup-tiers", "downsampled tiers, finest first, as RESOLUTION:RETENTION (each resolution a multiple of the previous one), or off")
	fs.Var(rulesFlag{&c.rules}, "retention-rule", "retention by selector, repeatable: 'TIER SELECTOR RETENTION' with TIER raw or a rollup tier, like 'raw {env=\"dev\"} 3d' or '1h {__name__=~\"node_.*\"} 5y'; the first matching rule wins")
	fs.Var(durationFlag{&c.rollupInterval}, "rollup-interval", "how often the downsampler runs")
	fs.Var(durationFlag{&c.rollupDelay}, "rollup-delay", "how long after a day's end its series are rolled up (until then queries read the day from raw samples; later samples roll it up again)")
	fs.Var(durationFlag{&c.rollupQuiet}, "rollup-quiet", "how long a series' day must take no sample before it is rolled up: a day being backfilled is rolled up once, when done (queries compute it from raw samples meanwhile)")
	fs.Var(durationFlag{&c.checkpoint}, "checkpoint-interval", "how often the head's chunks are written to the data files and the log truncated (a restart replays at most this much)")
	fs.IntVar(&c.rollupWorkers, "rollup-workers", 0, "goroutines that roll up a window, each a share of the series; 0: half the CPUs (at least 1)")
	fs.StringVar(&c.tokensFile, "tokens-file", "", "bearer tokens, one a line: \"SCOPES TOKEN [NAME]\" with SCOPES read, write or read,write; empty: no authentication")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate: serve gRPC and HTTP over TLS (with --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.IntVar(&c.maxRequestBytes, "max-request-bytes", 10<<20, "largest request body accepted, checked before decompression (remote-write body, gRPC message)")
	fs.DurationVar(&c.bodyTimeout, "body-timeout", 10*time.Second, "how long a remote-write body may take to arrive once its headers did: later, 408 (bodies are read before a write slot is taken)")
	fs.IntVar(&c.limits.SeriesPerRequest, "max-series-per-request", 100_000, "series in one write request")
	fs.IntVar(&c.limits.SamplesPerRequest, "max-samples-per-request", 1_000_000, "samples in one write request")
	fs.IntVar(&c.limits.LabelsPerSeries, "max-labels-per-series", 64, "labels of one series, __name__ included")
	fs.IntVar(&c.limits.LabelNameLength, "max-label-name-length", 256, "bytes of a label name")
	fs.IntVar(&c.limits.LabelValueLength, "max-label-value-length", 4096, "bytes of a label value")
	fs.IntVar(&c.limits.LabelBytes, "max-label-bytes-per-series", 16384, "bytes of a series' label names and values together")
	fs.IntVar(&c.maxActive, "max-active-series", 2_000_000, "active series in total (about 1 KB of memory each; a series counts once more for each KiB of its labels past the first); -1: no limit")
	fs.IntVar(&c.maxActiveMetric, "max-active-series-per-metric", 500_000, "active series of one metric name; -1: no limit")
	fs.IntVar(&c.maxConcurrent, "max-concurrent-writes", max(4, 2*runtime.GOMAXPROCS(0)), "write requests decoded and appended at once, all protocols together (bounds memory); others wait")
	fs.DurationVar(&c.queueTimeout, "write-queue-timeout", 5*time.Second, "how long a write request may wait for a slot before 429 / ResourceExhausted")
	fs.IntVar(&c.maxQueries, "max-concurrent-queries", max(2, runtime.GOMAXPROCS(0)), "PromQL queries and reports evaluated at once, HTTP and gRPC together (each may use --query-max-samples); others wait")
	fs.DurationVar(&c.queryQueue, "query-queue-timeout", 5*time.Second, "how long a query may wait for a slot before 429 / ResourceExhausted with Retry-After")
	fs.Var(bytesFlag{&c.memoryLimit}, "memory-limit", "memory budget of the process, like 2GiB: less Pebble's cache and memtables (96MiB by default), it is Go's soft limit (debug.SetMemoryLimit), and new writes and queries are refused (429, Retry-After) while the live heap is over 60% of that; 0: no budget (GOMEMLIMIT still applies)")
	fs.Var(bytesFlag{&c.minFreeDisk}, "min-free-disk", "free space to keep on the data directory's disk: below it writes are refused (503 / Unavailable, Retry-After) while queries, retention and rollups go on; 0: no check")
	fs.DurationVar(&c.queryTimeout, "query-timeout", 2*time.Minute, "longest a PromQL query may evaluate (a request's timeout parameter may ask for less)")
	fs.IntVar(&c.queryMaxSamples, "query-max-samples", 0, "samples one query may load into memory; over it: 422 execution / ResourceExhausted. 0: 50,000,000, or with --memory-limit the share of its Go budget that --max-concurrent-queries queries can hold at once (64 bytes a sample with its answer)")
	fs.IntVar(&c.queryMaxSeries, "query-max-series", 1_000_000, "series one query may select, all its selectors together; over it: 422 execution / ResourceExhausted")
	fs.DurationVar(&c.lookback, "query-lookback-delta", 5*time.Minute, "how far back an instant vector looks for a sample (Prometheus's default)")
	fs.IntVar(&c.exemplars, "exemplars-per-series", 10, "exemplars kept in memory for each series (the newest; remote-write 1.0 and 2.0 carry them), served by /api/v1/query_exemplars; 0: none kept")
	fs.Var(watchFlag{&c.forecastWatches}, "forecast-watch", "a capacity forecast exported on /metrics, repeatable: 'NAME THRESHOLD QUERY' (threshold a number or a percentage of a ratio), like 'cpu 80% avg by (host) (rate(cpu_seconds_total[5m]))': headroom_forecast_days_until_threshold{watch=NAME,group=...} for an alert on days of headroom left")
	c.forecastEvery, c.forecastRange = time.Hour, 30*24*time.Hour
	fs.Var(durationFlag{&c.forecastEvery}, "forecast-interval", "how often the --forecast-watch reports run (the first at start)")
	fs.Var(durationFlag{&c.forecastRange}, "forecast-range", "the history a --forecast-watch report fits its forecast on")
	fs.IntVar(&c.maxExemplars, "max-exemplars", 100_000, "exemplars kept in memory in all: the series written to least recently lose theirs first")
	c.queryFeatures = query.Features
	fs.Func("query-enable", "comma-separated Prometheus 3 PromQL features to turn on, by Prometheus's --enable-feature names: "+strings.Join(query.Features, ", ")+" (default all; an empty value turns all off, as in Prometheus without flags)", func(v string) error {
		c.queryFeatures = []string{}
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			if !slices.Contains(query.Features, f) {
				return fmt.Errorf("unknown feature %q (known: %s)", f, strings.Join(query.Features, ", "))
			}
			c.queryFeatures = append(c.queryFeatures, f)
		}
		return nil
	})
	fs.StringVar(&c.promote, "otlp-promote-resource-attributes", "", "comma-separated OTLP resource attributes to copy onto every series as labels (the rest go to target_info)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long in-flight requests may take before they are cut off")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ on the HTTP port (unauthenticated: keep the port private)")
	c.cluster.register(fs)
	return c
}

func (c *serveConfig) validate() error {
	for _, p := range []struct {
		name string
		v    int
	}{{"grpc-port", c.grpcPort}, {"http-port", c.httpPort}} {
		if p.v < 0 || p.v > 65535 {
			return fmt.Errorf("--%s %d: want 0..65535", p.name, p.v)
		}
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	// Pebble preallocates its log a memtable (16 MiB) and a tenth at a
	// time, and a checkpoint writes as much again: a smaller reserve is
	// gone before the next measure of free space.
	if c.minFreeDisk > 0 && c.minFreeDisk < minFreeDiskFloor {
		return fmt.Errorf("--min-free-disk %s: Pebble preallocates about 18MiB of log at a time and a checkpoint writes about as much, so a reserve under %s is crossed at once; use at least that, or 0 to turn the check off",
			formatBytes(c.minFreeDisk), formatBytes(minFreeDiskFloor))
	}
	if c.bodyTimeout <= 0 {
		return fmt.Errorf("--body-timeout %v: want more than 0", c.bodyTimeout)
	}
	if c.maxRequestBytes < 1024 {
		return fmt.Errorf("--max-request-bytes %d: want at least 1024", c.maxRequestBytes)
	}
	for _, l := range []struct {
		name string
		v    int
	}{
		{"max-series-per-request", c.limits.SeriesPerRequest}, {"max-samples-per-request", c.limits.SamplesPerRequest},
		{"max-labels-per-series", c.limits.LabelsPerSeries}, {"max-label-name-length", c.limits.LabelNameLength},
		{"max-label-value-length", c.limits.LabelValueLength}, {"max-label-bytes-per-series", c.limits.LabelBytes},
	} {
		if l.v < 1 {
			return fmt.Errorf("--%s %d: want at least 1", l.name, l.v)
		}
	}
	if c.queryTimeout <= 0 || c.queryMaxSamples < 0 || c.queryMaxSeries < 1 || c.lookback <= 0 {
		return errors.New("--query-timeout, --query-max-series and --query-lookback-delta must be positive, --query-max-samples 0 or more")
	}
	if c.rollupWorkers < 0 {
		return fmt.Errorf("--rollup-workers %d: want 0 (half the CPUs) or more", c.rollupWorkers)
	}
	if c.maxQueries < 1 {
		return fmt.Errorf("--max-concurrent-queries %d: want at least 1", c.maxQueries)
	}
	if c.memoryLimit != 0 && c.memoryLimit < 64<<20 {
		return fmt.Errorf("--memory-limit %s: want 0 (none) or at least 64MiB", formatBytes(c.memoryLimit))
	}
	if c.maxConcurrent < 1 {
		return fmt.Errorf("--max-concurrent-writes %d: want at least 1", c.maxConcurrent)
	}
	if c.maxActive == 0 || c.maxActiveMetric == 0 {
		return errors.New("--max-active-series and --max-active-series-per-metric: want at least 1, or -1 for no limit")
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// server is a running Headroom: the database, the gRPC and HTTP servers.
type server struct {
	cfg      *serveConfig
	log      *slog.Logger
	db       *storage.DB
	grpc     *grpc.Server
	health   *health.Server
	http     *http.Server
	grpcLis  net.Listener
	httpLis  net.Listener
	ready    atomic.Bool
	tls      bool
	serveErr chan error
	// restart is signalled when the storage failed a write and the disk
	// takes writes again: runServe then stops this server and opens a
	// new one on the same directory and ports.
	restart chan struct{}
	done    chan struct{} // closed by stop
	// reopenFree is the free space a failed storage waits for.
	reopenFree int64
	// tokens and cert are what reload swaps (nil tokens: no auth).
	tokens *auth.Tokens
	cert   *atomic.Pointer[tls.Certificate]
	// watcher runs the --forecast-watch reports (nil without any);
	// watching is done when its loop has returned.
	watcher  *forecastWatcher
	watching sync.WaitGroup
	// node is this server's membership of a cluster (nil: --cluster not set).
	node *cluster.Node
}

// reload reads the tokens file and the TLS certificate again (on SIGHUP),
// so that credentials rotate without dropping a connection. A file that
// fails to load leaves the current one in force.
func (s *server) reload() {
	if s.cfg.tokensFile != "" {
		t, err := auth.Load(s.cfg.tokensFile)
		if err != nil {
			s.log.Error("reload: --tokens-file kept as it was", "err", err)
		} else {
			s.tokens.Replace(t)
			s.log.Info("reload: tokens file read", "tokens", t.Len())
		}
	}
	if s.cfg.tlsCert != "" {
		c, err := tls.LoadX509KeyPair(s.cfg.tlsCert, s.cfg.tlsKey)
		if err != nil {
			s.log.Error("reload: TLS certificate kept as it was", "err", err)
		} else {
			s.cert.Store(&c)
			s.log.Info("reload: TLS certificate read", "file", s.cfg.tlsCert)
		}
	}
}

// querySampleBudget is the default --query-max-samples: 50 M, or with a
// Go memory budget, what queries can hold at once in half of it, at
// about 64 bytes a sample (the point, and its share of the answer being
// encoded). Shedding refuses new work over the budget; this bounds the
// work already admitted.
func querySampleBudget(goBudget int64, queries int) int {
	const perSample = 64
	if goBudget <= 0 {
		return 50_000_000
	}
	return int(min(50_000_000, max(100_000, goBudget/2/perSample/int64(queries))))
}

// minFreeDiskFloor is the smallest --min-free-disk that can do its job.
const minFreeDiskFloor = 48 << 20

// testFS, set only by tests, is the filesystem under Pebble (to inject
// disk faults into a real server).
var testFS vfs.FS

// storageCheckInterval is how often a server whose storage failed a
// write probes the disk.
const storageCheckInterval = time.Second

// watchStorage waits, once the storage has failed a write, for the disk
// to take writes again, then asks runServe for a restart: Pebble cannot
// resume its log in the process that saw it fail, but a fresh open can
// (it replays everything acknowledged), so writes come back without an
// operator.
func (s *server) watchStorage() {
	t := time.NewTicker(storageCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		failed := s.db.Failed()
		if failed == nil {
			continue
		}
		if err := storage.ProbeDisk(testFS, s.cfg.dataDir, s.reopenFree); err != nil {
			s.log.Debug("the disk still refuses writes", "err", err)
			continue
		}
		s.log.Warn("the disk takes writes again: reopening the data directory", "after", failed)
		select {
		case s.restart <- struct{}{}:
		default:
		}
		return
	}
}

// newServer opens the data directory and binds both ports; nothing is
// served until start.
func newServer(cfg *serveConfig, log *slog.Logger) (*server, error) {
	return newServerOn(cfg, log, nil)
}

// handoffPorts are the ports of the process, kept open from one server to
// the next.
type handoffPorts struct{ grpc, http *handoff }

// newServerOn is newServer on ports already bound (nil: bind them).
func newServerOn(cfg *serveConfig, log *slog.Logger, ports *handoffPorts) (*server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The last warnings and errors, for the console's status view.
	recent := &recentLog{}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = slog.New(recent.handler(log.Handler()))
	var tokens *auth.Tokens
	if cfg.tokensFile != "" {
		t, err := auth.Load(cfg.tokensFile)
		if err != nil {
			return nil, fmt.Errorf("--tokens-file: %w", err)
		}
		tokens = t
	}
	var tlsConf *tls.Config
	cert := &atomic.Pointer[tls.Certificate]{}
	if cfg.tlsCert != "" {
		c, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cert.Store(&c)
		// Through GetCertificate, so that SIGHUP can swap in a renewed
		// certificate for the next handshakes.
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.Load(), nil }}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	fsync := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "headroom_wal_fsync_duration_seconds",
		Help:    "Time to write and fsync one WAL batch (the durable part of a write request).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	walErrors := prometheus.NewCounter(prometheus.CounterOpts{Name: "headroom_wal_write_errors_total", Help: "WAL batches that failed to commit."})
	reg.MustRegister(fsync, walErrors)

	rules, err := resolveRules(cfg.rules, cfg.tiers)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sopts := storage.Options{
		RetentionRules:           rules,
		Retention:                cfg.retention,
		Tiers:                    cfg.tiers,
		RollupInterval:           cfg.rollupInterval,
		RollupDelay:              cfg.rollupDelay,
		RollupQuiet:              cfg.rollupQuiet,
		CheckpointInterval:       cfg.checkpoint,
		RollupWorkers:            cfg.rollupWorkers,
		MaxActiveSeries:          cfg.maxActive,
		MaxActiveSeriesPerMetric: cfg.maxActiveMetric,
		MinFreeDisk:              cfg.minFreeDisk,
		FS:                       testFS,
		Logger:                   log,
		OnCommit: func(d time.Duration, _ int, err error) {
			if err != nil {
				walErrors.Inc()
				return
			}
			fsync.Observe(d.Seconds())
		},
	}
	if cfg.memoryLimit > 0 && cfg.memoryLimit-sopts.OffHeapBytes() < 64<<20 {
		return nil, fmt.Errorf("--memory-limit %s: Pebble's block cache and memtables take %s of it, which leaves less than 64MiB for the rest",
			formatBytes(cfg.memoryLimit), formatBytes(sopts.OffHeapBytes()))
	}
	db, err := storage.Open(cfg.dataDir, sopts)
	if err != nil {
		return nil, err
	}
	log.Info("opened data directory", "dir", cfg.dataDir, "took", time.Since(start).Round(time.Millisecond),
		"replayed_samples", db.Stats().ReplayedSamples.Load(), "active_series", db.ActiveSeries())
	s := &server{cfg: cfg, log: log, db: db, reopenFree: sopts.ReopenFreeBytes(), tls: tlsConf != nil, serveErr: make(chan error, 2), restart: make(chan struct{}, 1), done: make(chan struct{}),
		tokens: tokens, cert: cert}
	fail := func(err error) (*server, error) {
		if s.grpcLis != nil {
			s.grpcLis.Close()
		}
		db.Close()
		return nil, err
	}
	if ports != nil {
		s.grpcLis, s.httpLis = ports.grpc.view(), ports.http.view()
	} else {
		s.grpcLis, err = net.Listen("tcp", net.JoinHostPort(cfg.listen, strconv.Itoa(cfg.grpcPort)))
		if err != nil {
			return fail(fmt.Errorf("gRPC port: %w (is another server running? see --grpc-port)", err))
		}
		s.httpLis, err = net.Listen("tcp", net.JoinHostPort(cfg.listen, strconv.Itoa(cfg.httpPort)))
		if err != nil {
			return fail(fmt.Errorf("HTTP port: %w (is another server running? see --http-port)", err))
		}
	}

	if cfg.cluster.urls != "" {
		if s.node, err = joinCluster(cfg, db, s.grpcLis.Addr(), tlsConf != nil, log); err != nil {
			return fail(err)
		}
	}

	im := ingest.NewMetrics(reg)
	// Pebble's cache and memtables live outside Go's heap: Go gets what
	// the budget leaves.
	var memory *admit.Memory
	if cfg.memoryLimit > 0 {
		memory = admit.NewMemory(cfg.memoryLimit - sopts.OffHeapBytes())
	}
	gate := admit.NewGate(cfg.maxConcurrent, cfg.queueTimeout, "write requests", memory)
	queryGate := admit.NewGate(cfg.maxQueries, cfg.queryQueue, "queries", memory)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "headroom_write_slots_in_use", Help: "Write requests being decoded and appended (waiting ones excluded)."},
			func() float64 { n, _ := gate.InFlight(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "headroom_write_slots", Help: "--max-concurrent-writes."},
			func() float64 { _, c := gate.InFlight(); return float64(c) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "headroom_query_slots_in_use", Help: "Queries and reports being evaluated (waiting ones excluded)."},
			func() float64 { n, _ := queryGate.InFlight(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "headroom_query_slots", Help: "--max-concurrent-queries."},
			func() float64 { _, c := queryGate.InFlight(); return float64(c) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "headroom_memory_limit_bytes", Help: "--memory-limit (0: none)."},
			func() float64 { return float64(memory.Limit()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "headroom_memory_refused_total", Help: "Requests refused because the live heap was over the share of --memory-limit."},
			func() float64 { return float64(memory.Refused()) }),
		// The one to alert on: 0 while writes are refused (the disk under
		// --min-free-disk, or failed until the data directory is reopened).
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "headroom_storage_writable", Help: "1 while the storage accepts writes, 0 while it refuses them (disk nearly full or failed)."},
			func() float64 {
				if db.Writable() != nil {
					return 0
				}
				return 1
			}),
	)
	iopts := ingest.Options{Limits: cfg.limits, Metrics: im, Gate: gate}
	perSeries := cfg.exemplars
	if perSeries > 0 && cfg.maxExemplars < perSeries {
		perSeries = 0
	}
	exemplars := exemplar.New(perSeries, max(cfg.maxExemplars/max(perSeries, 1), 1))
	app := appendable{db, exemplars, s.node}
	// The queries' source: this node's store, or the whole cluster's.
	var src query.Source = querySource{db}
	if s.node != nil {
		src = s.node
	}

	// gRPC: auth, then request metrics, then the services.
	grpcDur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "headroom_grpc_request_duration_seconds", Help: "gRPC calls by method and status code (streams: their whole life).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"method", "code"})
	reg.MustRegister(grpcDur)
	denied := func(protocol string) func(string) { return func(why string) { im.Reject(protocol, why) } }
	protocolOf := func(method string) string {
		if strings.HasPrefix(method, "/opentelemetry.") {
			return "otlp"
		}
		return "grpc"
	}
	authUnary, authStream := tokens.GRPC(auth.MethodScopes{
		"/headroom.v1.Ingest/": auth.Write,
		"/opentelemetry.proto.collector.metrics.v1.MetricsService/": auth.Write,
		"/headroom.v1.Query/":   auth.Read,
		"/headroom.v1.Reports/": auth.Read,
		// A node asks its peers with a read token (--cluster-token).
		"/headroom.cluster.v1.Cluster/": auth.Read,
	}, []string{"/grpc.health.v1.Health/"}, func(method, why string) { denied(protocolOf(method))(why) })
	guard := newPanicGuard(log, reg)
	timeUnary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		t := time.Now()
		resp, err := h(ctx, req)
		grpcDur.WithLabelValues(info.FullMethod, status.Code(err).String()).Observe(time.Since(t).Seconds())
		return resp, err
	}
	timeStream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		t := time.Now()
		err := h(srv, ss)
		grpcDur.WithLabelValues(info.FullMethod, status.Code(err).String()).Observe(time.Since(t).Seconds())
		return err
	}
	gopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.maxRequestBytes),
		// Each stream may hold a message of up to --max-request-bytes
		// before the gate: bound them per connection.
		grpc.MaxConcurrentStreams(64),
		grpc.ForceServerCodecV2(ingest.Codec{}),
		// Inside the timing, so that a recovered panic counts as Internal.
		grpc.ChainUnaryInterceptor(timeUnary, guard.unary, authUnary),
		grpc.ChainStreamInterceptor(timeStream, guard.stream, authStream),
	}
	if tlsConf != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tlsConf)))
	}
	s.grpc = grpc.NewServer(gopts...)
	ingest.NewGRPC(app, iopts).Register(s.grpc)
	otlp := ingest.NewOTLP(app, iopts)
	for _, a := range strings.Split(cfg.promote, ",") {
		if a = strings.TrimSpace(a); a != "" {
			otlp.PromoteResourceAttributes = append(otlp.PromoteResourceAttributes, a)
		}
	}
	otlp.Register(s.grpc)
	if s.node != nil {
		s.node.RegisterServer(s.grpc)
	}
	maxSamples := cfg.queryMaxSamples
	if maxSamples == 0 {
		maxSamples = querySampleBudget(memory.Limit(), cfg.maxQueries)
	}
	engine := &query.Engine{LookbackDelta: cfg.lookback, MaxSamples: maxSamples, MaxSeries: cfg.queryMaxSeries, Timeout: cfg.queryTimeout, Gate: queryGate, Features: cfg.queryFeatures}
	headroomv1.RegisterQueryServer(s.grpc, query.NewGRPC(src, engine))
	reports := report.NewGRPC(src, engine)
	reports.MetricUnit = func(m string) string { return db.Metadata(m, 1)[m].Unit }
	headroomv1.RegisterReportsServer(s.grpc, reports)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	// Server reflection, so that grpcurl and other tools list and call the
	// services without the .proto files (a read token with --tokens-file).
	reflection.Register(s.grpc)

	// HTTP.
	httpDur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "headroom_http_request_duration_seconds", Help: "HTTP requests by handler and status code.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"handler", "code"})
	reg.MustRegister(httpDur, storageCollector{db: db, limits: cfg.limits})
	if len(cfg.forecastWatches) > 0 {
		var ws []forecastWatch
		for _, x := range cfg.forecastWatches {
			w, err := parseWatch(x)
			if err != nil {
				return fail(fmt.Errorf("--forecast-watch: %w", err))
			}
			ws = append(ws, w)
		}
		s.watcher = newForecastWatcher(ws, cfg.forecastEvery, cfg.forecastRange, watchRunner(db, src, engine))
		reg.MustRegister(s.watcher)
	}
	mux := http.NewServeMux()
	handle := func(pattern, name string, h http.Handler) {
		mux.Handle(pattern, promhttp.InstrumentHandlerDuration(httpDur.MustCurryWith(prometheus.Labels{"handler": name}), h))
	}
	rw := ingest.NewRemoteWrite(app, iopts)
	rw.MaxBodyBytes = int64(cfg.maxRequestBytes)
	rw.BodyTimeout = cfg.bodyTimeout
	handle("/api/v1/write", "/api/v1/write", tokens.HTTP(auth.Write, denied("remote_write"), rw))
	handle("/metrics", "/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	promAPI := api.New(src, version, engine)
	promAPI.Metadata = db.Metadata
	promAPI.Exemplars = func(start, end int64, sets [][]*series.Matcher) []series.SeriesExemplars {
		return exemplars.Select(start, end, sets...)
	}
	if s.node != nil {
		// Each node keeps the exemplars of the writes it received: the
		// API asks them all.
		s.node.SetExemplars(promAPI.Exemplars)
		promAPI.Exemplars = s.node.Exemplars
	}
	promAPI.TSDBStatus = func(limit int) api.TSDBStatus { return tsdbStatus(db.HeadStats(limit)) }
	promAPI.Errors = func() any { return recent.entries() }
	if s.node != nil {
		promAPI.Cluster = func() any { return s.node.Status() }
	}
	if cfg.flags != nil {
		promAPI.Flags = map[string]string{}
		cfg.flags.VisitAll(func(f *flag.Flag) { promAPI.Flags[f.Name] = f.Value.String() })
	}
	promAPI.Register(mux, func(name string, h http.Handler) http.Handler {
		return promhttp.InstrumentHandlerDuration(httpDur.MustCurryWith(prometheus.Labels{"handler": name}),
			tokens.HTTP(auth.Read, nil, h))
	})
	handle("/healthz", "/healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	}))
	handle("/readyz", "/readyz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready: starting or shutting down", http.StatusServiceUnavailable)
			return
		}
		// A server that refuses writes is not ready for what agents send
		// it (a load balancer should send them elsewhere); /healthz stays
		// 200, as it still answers queries and must not be restarted.
		if err := db.Writable(); err != nil {
			w.Header().Set("Retry-After", "5")
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	}))
	if cfg.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// The web console: its files to anyone (they hold no data), its
	// data through the API with a read token (the sign-in form sets it as
	// a session cookie).
	console := ui.Handler()
	for _, p := range []string{"/{$}", "/app.js", "/app.css"} {
		handle(p, "/console", console)
	}
	handle("/console/login", "/console/login", tokens.LoginHandler(tlsConf != nil))
	s.http = &http.Server{
		Handler:           guard.http(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute, // a body trickling in must not hold a write slot forever
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         tlsConf,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// querySource adapts the engine to what query declares; the API's "all
// time" becomes the engine's range.
type querySource struct{ db *storage.DB }

// HasHistograms says whether queries need to look for native histograms
// beside the floats a rollup tier answers with.
func (s querySource) HasHistograms() bool { return s.db.HasHistograms() }

func (s querySource) Querier(mint, maxt int64) (query.Querier, error) {
	return s.db.Querier(max(mint, storage.MinTime), min(maxt, storage.MaxTime))
}

func (s querySource) RawOldest() int64 { return s.db.RawOldest() }

func (s querySource) Tiers() []query.Tier {
	var out []query.Tier
	for _, t := range s.db.Tiers() {
		out = append(out, query.Tier{Resolution: t.Resolution, Watermark: t.Watermark, Oldest: t.Oldest, Sketches: t.Sketches})
	}
	return out
}

func (s querySource) EachRollup(tier int, mint, maxt int64, cols uint, shard, shards int, ms []*series.Matcher, f func(series.Labels, *rollup.Columns) error) (query.TierRead, error) {
	rr, err := s.db.EachRollup(tier, mint, maxt, cols, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

func (s querySource) EachHistRollup(tier int, mint, maxt int64, shard, shards int, ms []*series.Matcher, f func(series.Labels, []rollup.HistBucket) error) (query.TierRead, error) {
	rr, err := s.db.EachHistRollup(tier, mint, maxt, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}

func tsdbStatus(st storage.HeadStats) api.TSDBStatus {
	conv := func(in []storage.NameCount) []api.NameCount {
		out := make([]api.NameCount, len(in))
		for i, x := range in {
			out[i] = api.NameCount{Name: x.Name, Value: x.Value}
		}
		return out
	}
	return api.TSDBStatus{
		HeadStats:                   api.HeadStats{NumSeries: st.NumSeries, ChunkCount: st.ChunkCount, MinTime: st.MinTime, MaxTime: st.MaxTime},
		SeriesCountByMetricName:     conv(st.SeriesCountByMetricName),
		LabelValueCountByLabelName:  conv(st.LabelValueCountByLabelName),
		MemoryInBytesByLabelName:    conv(st.MemoryInBytesByLabelName),
		SeriesCountByLabelValuePair: conv(st.SeriesCountByLabelValuePair),
	}
}

// appendable adapts the engine to what ingest declares.
type appendable struct {
	db        *storage.DB
	exemplars *exemplar.Store
	node      *cluster.Node // in a cluster: writes go to the partitions' streams
}

func (a appendable) AddExemplar(ls series.Labels, e series.Exemplar) error {
	return a.exemplars.Add(ls, e)
}

func (a appendable) Appender() ingest.Appender {
	if a.node != nil {
		return a.node.Appender()
	}
	return a.db.Appender()
}

func (a appendable) SetMetadata(metric string, md series.Metadata) error {
	if a.node != nil {
		return a.node.SetMetadata(metric, md) // every node's store
	}
	return a.db.SetMetadata(metric, md)
}

// start serves both ports in the background and marks the server ready.
func (s *server) start() {
	go s.watchStorage()
	if s.watcher != nil {
		s.watching.Add(1)
		go func() {
			defer s.watching.Done()
			s.watcher.loop(s.done, s.log.Warn)
		}()
	}
	go func() { s.serveErr <- s.grpc.Serve(s.grpcLis) }()
	go func() {
		var err error
		if s.tls {
			err = s.http.ServeTLS(s.httpLis, "", "")
		} else {
			err = s.http.Serve(s.httpLis)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.serveErr <- err
	}()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.ready.Store(true)
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	s.log.Info("serving", "grpc", s.grpcLis.Addr().String(), "http", scheme+"://"+s.httpLis.Addr().String(),
		"tls", s.tls, "auth", s.cfg.tokensFile != "")
}

// stop refuses new work, lets in-flight requests finish (up to the
// shutdown timeout), then checkpoints and closes the database. Requests
// acknowledged before stop are durable whatever happens here: stop only
// makes the next start faster.
func (s *server) stop() error {
	close(s.done)
	s.ready.Store(false)
	s.health.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.shutdownTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	httpErr := s.http.Shutdown(ctx)
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("in-flight gRPC calls cut off at the shutdown timeout", "timeout", s.cfg.shutdownTimeout)
		s.grpc.Stop()
		<-done
	}
	if httpErr != nil {
		s.log.Warn("in-flight HTTP requests cut off at the shutdown timeout", "err", httpErr)
		s.http.Close()
	}
	s.watching.Wait() // a watch's report reads the database
	if s.node != nil {
		s.node.Close() // stops applying the partitions' messages to db
	}
	start := time.Now()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close data directory: %w", err)
	}
	s.log.Info("data directory closed", "checkpoint_took", time.Since(start).Round(time.Millisecond))
	return nil
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := serveFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: headroom serve [flags]

Serves the data directory: gRPC (headroom.v1.Ingest, OTLP metrics) on
--grpc-port and HTTP (Prometheus remote-write, /metrics, /healthz, /readyz)
on --http-port, both on --listen. SIGTERM or SIGINT stops it cleanly;
SIGHUP reads --tokens-file and --tls-cert/--tls-key again.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	if cfg.configFile != "" {
		if err := applyConfigFile(fs, cfg.configFile); err != nil {
			return err
		}
	}
	level, err := parseLevel(cfg.logLevel)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// Handed over by the process this one replaced after a disk failure
	// (reexec), or bound by the first server.
	ports, err := inheritedPorts()
	if err != nil {
		return err
	}
	if ports != nil {
		log.Warn("restarted in place after a disk failure: serving the same ports", "grpc", ports.grpc.lis.Addr().String(), "http", ports.http.lis.Addr().String())
	}
	defer func() {
		if ports != nil {
			ports.grpc.Close()
			ports.http.Close()
		}
	}()
	for {
		s, err := newServerOn(cfg, log, ports)
		if err != nil {
			return err
		}
		if ports == nil {
			// Bound after the first open, so that a port in use is
			// reported as before; kept across reopens.
			ports = &handoffPorts{grpc: newHandoff(s.grpcLis), http: newHandoff(s.httpLis)}
			s.grpcLis, s.httpLis = ports.grpc.view(), ports.http.view()
		}
		s.start()
		restart := false
		for done := false; !done; {
			select {
			case <-ctx.Done():
				log.Info("shutting down: no new requests; finishing in-flight ones")
				done = true
			case err := <-s.serveErr:
				log.Error("a listener failed; shutting down", "err", err)
				done = true
			case <-hup:
				s.reload()
			case <-s.restart:
				restart, done = true, true
			}
		}
		if restart {
			// Pebble may have stopped inside a commit when the disk
			// failed (storage.ErrWedged), or its close may hang: then
			// only a new process can open the directory again.
			stopped := make(chan error, 1)
			go func() { stopped <- s.stop() }()
			select {
			case err := <-stopped:
				if errors.Is(err, storage.ErrWedged) {
					log.Warn("restarting the process to reopen the data directory", "why", err)
					return reexec(ports)
				}
				if err != nil {
					log.Warn("closing the data directory after the disk failure", "err", err)
				}
			case <-time.After(cfg.shutdownTimeout + time.Minute):
				log.Error("closing the data directory after the disk failure hangs: restarting the process to reopen it", "waited", cfg.shutdownTimeout+time.Minute)
				return reexec(ports)
			}
			continue
		}
		stop() // a second signal kills the process the default way
		return s.stop()
	}
}

// resolveRules turns --retention-rule values into storage rules.
func resolveRules(specs []string, tiers []storage.Tier) ([]storage.RetentionRule, error) {
	var out []storage.RetentionRule
	for _, spec := range specs {
		tier, sel, ret, err := splitRule(spec)
		if err != nil {
			return nil, err
		}
		idx := -2
		var names []string
		for i, t := range tiers {
			names = append(names, query.TierName(t.Resolution))
			if query.TierName(t.Resolution) == tier {
				idx = i
			}
		}
		if tier == "raw" {
			idx = -1
		}
		if idx == -2 {
			return nil, fmt.Errorf("retention rule %q: unknown tier %q (raw, %s)", spec, tier, strings.Join(names, ", "))
		}
		ms, err := query.ParseSelector(sel)
		if err != nil {
			return nil, fmt.Errorf("retention rule %q: %w", spec, err)
		}
		out = append(out, storage.RetentionRule{Matchers: ms, Tier: idx, Retention: ret})
	}
	return out, nil
}
