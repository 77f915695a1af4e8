package storage

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/series"
)

// Metric metadata (type, unit, help) as agents send it beside their
// samples, one entry per metric name: kept in memory, in Pebble under
// kindMetricMeta for restarts. Agents repeat it (Prometheus every
// minute), so a write is made only when an entry changes and is not
// synced: a crash may lose the last change until the agent sends it again.

// maxMetadataBytes bounds one entry (the help text is free text).
const maxMetadataBytes = 4 << 10

type metadataStore struct {
	mu sync.RWMutex
	m  map[string]series.Metadata
}

func metadataKey(metric string) []byte { return append([]byte{kindMetricMeta}, metric...) }

func encodeMetadata(md series.Metadata) []byte {
	var b []byte
	for _, s := range []string{md.Type, md.Unit, md.Help} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func decodeMetadata(b []byte) (series.Metadata, error) {
	var f [3]string
	for i := range f {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return series.Metadata{}, fmt.Errorf("field %d truncated", i)
		}
		f[i], b = string(b[k:k+int(n)]), b[k+int(n):]
	}
	if len(b) != 0 {
		return series.Metadata{}, fmt.Errorf("%d bytes after the fields", len(b))
	}
	return series.Metadata{Type: f[0], Unit: f[1], Help: f[2]}, nil
}

// loadMetadata reads the stored entries at open.
func (db *DB) loadMetadata() error {
	db.meta.m = map[string]series.Metadata{}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{kindMetricMeta}, UpperBound: []byte{kindMetricMeta + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		md, err := decodeMetadata(it.Value())
		if err != nil {
			return &CorruptionError{Key: append([]byte(nil), it.Key()...), Err: fmt.Errorf("metric metadata: %w", err)}
		}
		db.meta.m[string(it.Key()[1:])] = md
	}
	return it.Error()
}

// SetMetadata records a metric's type, unit and help (the latest
// wins). An empty metric name, or an entry over 4 KiB, is refused.
func (db *DB) SetMetadata(metric string, md series.Metadata) error {
	if metric == "" {
		return fmt.Errorf("%w: metadata without a metric name", series.ErrInvalid)
	}
	if n := len(metric) + len(md.Type) + len(md.Unit) + len(md.Help); n > maxMetadataBytes {
		return fmt.Errorf("%w: metadata of %q is %d bytes, over the limit of %d", series.ErrInvalid, metric, n, maxMetadataBytes)
	}
	db.meta.mu.RLock()
	old, ok := db.meta.m[metric]
	db.meta.mu.RUnlock()
	if ok && old == md {
		return nil
	}
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return series.ErrClosed
	}
	if err := db.Writable(); err != nil {
		return err
	}
	if err := db.pdb.Set(metadataKey(metric), encodeMetadata(md), pebble.NoSync); err != nil {
		return err
	}
	// Copies: the strings may share the memory of a request body.
	md = series.Metadata{Type: strings.Clone(md.Type), Unit: strings.Clone(md.Unit), Help: strings.Clone(md.Help)}
	db.meta.mu.Lock()
	db.meta.m[strings.Clone(metric)] = md
	db.meta.mu.Unlock()
	return nil
}

// Metadata returns the metadata of metric (all metrics when empty), at
// most limit metrics (0: all), by name.
func (db *DB) Metadata(metric string, limit int) map[string]series.Metadata {
	db.meta.mu.RLock()
	defer db.meta.mu.RUnlock()
	out := map[string]series.Metadata{}
	if metric != "" {
		if md, ok := db.meta.m[metric]; ok {
			out[metric] = md
		}
		return out
	}
	names := make([]string, 0, len(db.meta.m))
	for n := range db.meta.m {
		names = append(names, n)
	}
	sort.Strings(names)
	if limit > 0 && len(names) > limit {
		names = names[:limit]
	}
	for _, n := range names {
		out[n] = db.meta.m[n]
	}
	return out
}
