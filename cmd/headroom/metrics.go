package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/headroomdb/headroom/ingest"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
)

// storageCollector exports the engine's counters and Pebble's health at
// scrape time, so nothing is kept twice.
type storageCollector struct {
	db     *storage.DB
	limits ingest.Limits
}

var (
	descActive         = prometheus.NewDesc("headroom_active_series", "Series in the head (received a sample within the idle timeout).", nil, nil)
	descActiveLimit    = prometheus.NewDesc("headroom_active_series_limit", "Limit on active series in total (0: none).", nil, nil)
	descTopMetric      = prometheus.NewDesc("headroom_active_series_top_metric", "Active series of the metric name that has the most: how close the per-metric limit is.", []string{"metric"}, nil)
	descPerMetricLimit = prometheus.NewDesc("headroom_active_series_per_metric_limit", "Limit on active series of one metric name (0: none).", nil, nil)
	descRequestLimit   = prometheus.NewDesc("headroom_request_limit", "Per-request limits in force.", []string{"limit"}, nil)
	descRollupLag      = prometheus.NewDesc("headroom_rollup_lag_seconds", "How long ago the oldest series-day due for downsampling was last written (0: the downsampler is caught up), as its last run found it.", nil, nil)
	descRollupBuckets  = prometheus.NewDesc("headroom_rollup_buckets_total", "Rollup buckets written since the server started, by tier.", []string{"tier"}, nil)
	descRollupLastRun  = prometheus.NewDesc("headroom_rollup_last_run_timestamp_seconds", "When the downsampler last counted its backlog (Unix seconds; 0: not yet).", nil, nil)
	descTierDisk       = prometheus.NewDesc("headroom_tier_disk_bytes", "Bytes on disk of raw chunks (tier raw) and of each rollup tier's blocks (Pebble's estimate over their key ranges, compressed).", []string{"tier"}, nil)
	descRollupPending  = prometheus.NewDesc("headroom_rollup_pending", "Series-days marked for the downsampler, as its last run left them: open (the day is not over), waiting (written to in the last two checkpoint intervals), due. Queries compute the days not rolled up yet from raw samples.", []string{"state"}, nil)
	descCounters       = map[string]*prometheus.Desc{}
	descPebble         = map[string]*prometheus.Desc{}
)

var storageCounters = []struct {
	name, help string
	get        func(*storage.Stats) float64
}{
	{"headroom_storage_samples_appended_total", "Samples applied to the head.", func(s *storage.Stats) float64 { return float64(s.SamplesAppended.Load()) }},
	{"headroom_storage_samples_out_of_order_total", "Samples older than their series' open chunk, merged at the next checkpoint.", func(s *storage.Stats) float64 { return float64(s.SamplesOOO.Load()) }},
	{"headroom_storage_series_created_total", "New series.", func(s *storage.Stats) float64 { return float64(s.SeriesCreated.Load()) }},
	{"headroom_storage_commits_total", "Durable write batches.", func(s *storage.Stats) float64 { return float64(s.Commits.Load()) }},
	{"headroom_storage_checkpoints_total", "Head checkpoints (WAL truncations).", func(s *storage.Stats) float64 { return float64(s.Checkpoints.Load()) }},
	{"headroom_storage_chunks_written_total", "Chunks written to Pebble.", func(s *storage.Stats) float64 { return float64(s.ChunksWritten.Load()) }},
	{"headroom_storage_series_evicted_total", "Idle series that left the head.", func(s *storage.Stats) float64 { return float64(s.SeriesEvicted.Load()) }},
	{"headroom_storage_series_collected_total", "Series deleted because retention expired all their data.", func(s *storage.Stats) float64 { return float64(s.SeriesCollected.Load()) }},
	{"headroom_storage_retention_runs_total", "Retention passes.", func(s *storage.Stats) float64 { return float64(s.RetentionRuns.Load()) }},
}

func init() {
	for _, c := range storageCounters {
		descCounters[c.name] = prometheus.NewDesc(c.name, c.help, nil, nil)
	}
	for name, help := range map[string]string{
		"headroom_pebble_compactions_total":        "Pebble compactions.",
		"headroom_pebble_flushes_total":            "Pebble memtable flushes.",
		"headroom_pebble_compaction_debt_bytes":    "Bytes Pebble estimates it must compact to reach a stable shape.",
		"headroom_pebble_disk_bytes":               "Bytes the data directory uses on disk.",
		"headroom_pebble_l0_files":                 "Files in level 0 (write stalls come when this grows).",
		"headroom_pebble_memtable_bytes":           "Bytes in memtables.",
		"headroom_pebble_read_amplification":       "Pebble's read amplification.",
		"headroom_storage_replayed_samples":        "Samples replayed from the WAL at the last start.",
		"headroom_storage_replay_duration_seconds": "Time the last start spent replaying the WAL.",
	} {
		descPebble[name] = prometheus.NewDesc(name, help, nil, nil)
	}
}

func (c storageCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c storageCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	total, perMetric := c.db.Limits()
	gauge(descActive, float64(c.db.ActiveSeries()))
	gauge(descActiveLimit, float64(total))
	gauge(descPerMetricLimit, float64(perMetric))
	name, n := c.db.TopMetric()
	gauge(descTopMetric, float64(n), name)
	for _, l := range []struct {
		name string
		v    int
	}{
		{"series_per_request", c.limits.SeriesPerRequest},
		{"samples_per_request", c.limits.SamplesPerRequest},
		{"labels_per_series", c.limits.LabelsPerSeries},
		{"label_name_length", c.limits.LabelNameLength},
		{"label_value_length", c.limits.LabelValueLength},
	} {
		gauge(descRequestLimit, float64(l.v), l.name)
	}
	for _, p := range c.db.RollupProgress() {
		ch <- prometheus.MustNewConstMetric(descRollupBuckets, prometheus.CounterValue, float64(p.Buckets), query.TierName(p.Resolution))
	}
	if len(c.db.Tiers()) > 0 {
		bl := c.db.RollupPending()
		gauge(descRollupPending, float64(bl.Open), "open")
		gauge(descRollupPending, float64(bl.Waiting), "waiting")
		gauge(descRollupPending, float64(bl.Due), "due")
		gauge(descRollupLag, bl.OldestDue.Seconds())
		if !bl.At.IsZero() {
			gauge(descRollupLastRun, float64(bl.At.UnixMilli())/1000)
		}
	}
	if raw, tiers, err := c.db.TierDiskBytes(); err == nil {
		gauge(descTierDisk, float64(raw), "raw")
		for i, t := range c.db.Tiers() {
			if i < len(tiers) {
				gauge(descTierDisk, float64(tiers[i]), query.TierName(t.Resolution))
			}
		}
	}
	st := c.db.Stats()
	for _, k := range storageCounters {
		ch <- prometheus.MustNewConstMetric(descCounters[k.name], prometheus.CounterValue, k.get(st))
	}
	m := c.db.Metrics()
	ch <- prometheus.MustNewConstMetric(descPebble["headroom_pebble_compactions_total"], prometheus.CounterValue, float64(m.Compact.Count))
	ch <- prometheus.MustNewConstMetric(descPebble["headroom_pebble_flushes_total"], prometheus.CounterValue, float64(m.Flush.Count))
	gauge(descPebble["headroom_pebble_compaction_debt_bytes"], float64(m.Compact.EstimatedDebt))
	gauge(descPebble["headroom_pebble_disk_bytes"], float64(m.DiskSpaceUsage()))
	gauge(descPebble["headroom_pebble_l0_files"], float64(m.Levels[0].TablesCount))
	gauge(descPebble["headroom_pebble_memtable_bytes"], float64(m.MemTable.Size))
	gauge(descPebble["headroom_pebble_read_amplification"], float64(m.ReadAmp()))
	gauge(descPebble["headroom_storage_replayed_samples"], float64(st.ReplayedSamples.Load()))
	gauge(descPebble["headroom_storage_replay_duration_seconds"], time.Duration(st.ReplayDuration.Load()).Seconds())
}
