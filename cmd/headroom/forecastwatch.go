package main

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/query/report"
	"github.com/headroomdb/headroom/storage"
)

// Forecast watches (--forecast-watch): capacity reports the server runs
// every --forecast-interval, whose forecasts /metrics exports, so that
// an alert can fire on "less than 30 days of headroom":
//
//	headroom_forecast_days_until_threshold{watch="cpu",group="{host=\"a\"}"} < 30

// forecastWatch is one --forecast-watch: "NAME THRESHOLD QUERY".
type forecastWatch struct {
	name      string
	threshold float64
	query     string
}

var watchName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// parseWatch reads "NAME THRESHOLD QUERY": the name the first word, the
// threshold the second (a number or a percentage of a ratio), the query
// the rest.
func parseWatch(s string) (forecastWatch, error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return forecastWatch{}, fmt.Errorf("forecast watch %q: want NAME THRESHOLD QUERY, like 'cpu 80%% avg by (host) (rate(cpu_seconds_total[5m]))'", s)
	}
	if !watchName.MatchString(f[0]) {
		return forecastWatch{}, fmt.Errorf("forecast watch %q: name %q: letters, digits and _ (it becomes a label value)", s, f[0])
	}
	thr, err := report.ParseThreshold(f[1])
	if err != nil {
		return forecastWatch{}, fmt.Errorf("forecast watch %q: %w", s, err)
	}
	// The query: what follows the threshold, as written.
	q := strings.TrimSpace(s)
	q = strings.TrimSpace(strings.TrimPrefix(q, f[0]))
	q = strings.TrimSpace(strings.TrimPrefix(q, f[1]))
	if _, err := (&query.Engine{}).Parse(q); err != nil {
		return forecastWatch{}, fmt.Errorf("forecast watch %q: %w", s, err)
	}
	return forecastWatch{name: f[0], threshold: thr, query: q}, nil
}

type watchFlag struct{ watches *[]string }

func (f watchFlag) String() string {
	if f.watches == nil {
		return ""
	}
	return strings.Join(*f.watches, "; ")
}

func (f watchFlag) Set(s string) error {
	if _, err := parseWatch(s); err != nil {
		return err
	}
	*f.watches = append(*f.watches, s)
	return nil
}

func (f watchFlag) Repeatable() bool { return true }

// watchResult is a watch's last run.
type watchResult struct {
	at     time.Time
	groups []report.Group
	err    error
}

// forecastWatcher runs the watches and is their /metrics collector.
type forecastWatcher struct {
	watches  []forecastWatch
	interval time.Duration
	rng      time.Duration
	run      func(ctx context.Context, o report.Options) (*report.Report, error)

	mu      sync.Mutex
	results map[string]watchResult
	errors  map[string]int

	days, earliest, level, lastRun, errs *prometheus.Desc
}

func newForecastWatcher(watches []forecastWatch, interval, rng time.Duration, run func(context.Context, report.Options) (*report.Report, error)) *forecastWatcher {
	return &forecastWatcher{watches: watches, interval: interval, rng: rng, run: run, results: map[string]watchResult{}, errors: map[string]int{},
		days: prometheus.NewDesc("headroom_forecast_days_until_threshold",
			"Days from the last run until the group's daily p95 most likely reaches the watch's threshold (0: above it now; +Inf: not within the horizon, or no reliable trend).",
			[]string{"watch", "group"}, nil),
		earliest: prometheus.NewDesc("headroom_forecast_days_until_threshold_earliest",
			"The early end of the crossing's 80% interval, in days (+Inf without a crossing).", []string{"watch", "group"}, nil),
		level: prometheus.NewDesc("headroom_forecast_level",
			"The group's last daily p95, as the forecast fits it.", []string{"watch", "group"}, nil),
		lastRun: prometheus.NewDesc("headroom_forecast_last_run_timestamp_seconds",
			"When the watch's report last ran (Unix seconds).", []string{"watch"}, nil),
		errs: prometheus.NewDesc("headroom_forecast_errors_total",
			"Runs of the watch's report that failed (the server log says why).", []string{"watch"}, nil),
	}
}

// loop runs every watch now and then every interval, until done.
func (w *forecastWatcher) loop(done <-chan struct{}, log func(msg string, args ...any)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-done
		cancel()
	}()
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		for _, wt := range w.watches {
			now := time.Now()
			rep, err := w.run(ctx, report.Options{Query: wt.query, Start: now.Add(-w.rng), End: now, Threshold: wt.threshold, HasThreshold: true})
			if ctx.Err() != nil {
				return
			}
			w.mu.Lock()
			if err != nil {
				w.errors[wt.name]++
				log("forecast watch failed", "watch", wt.name, "err", err)
				r := w.results[wt.name]
				r.err = err
				w.results[wt.name] = r
			} else {
				w.results[wt.name] = watchResult{at: now, groups: rep.Groups}
			}
			w.mu.Unlock()
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

func (w *forecastWatcher) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{w.days, w.earliest, w.level, w.lastRun, w.errs} {
		ch <- d
	}
}

func (w *forecastWatcher) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wt := range w.watches {
		ch <- prometheus.MustNewConstMetric(w.errs, prometheus.CounterValue, float64(w.errors[wt.name]), wt.name)
		r, ok := w.results[wt.name]
		if !ok || r.at.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(w.lastRun, prometheus.GaugeValue, float64(r.at.UnixMilli())/1000, wt.name)
		for _, g := range r.groups {
			days, early := math.Inf(1), math.Inf(1)
			switch {
			case g.AlreadyAboveThreshold:
				days, early = 0, 0
			case g.CrossingInHorizon:
				days = g.DaysUntilCrossing
				early = math.Max(0, g.CrossingLo.Sub(r.at).Hours()/24)
			}
			name := g.Labels.String()
			ch <- prometheus.MustNewConstMetric(w.days, prometheus.GaugeValue, days, wt.name, name)
			ch <- prometheus.MustNewConstMetric(w.earliest, prometheus.GaugeValue, early, wt.name, name)
			ch <- prometheus.MustNewConstMetric(w.level, prometheus.GaugeValue, g.CurrentLevel, wt.name, name)
		}
	}
}

// watchRunner is the report runner of a server's watches.
func watchRunner(db *storage.DB, src query.Source, engine *query.Engine) func(context.Context, report.Options) (*report.Report, error) {
	return func(ctx context.Context, o report.Options) (*report.Report, error) {
		o.MetricUnit = func(m string) string { return db.Metadata(m, 1)[m].Unit }
		return report.Run(ctx, engine, src, o)
	}
}
