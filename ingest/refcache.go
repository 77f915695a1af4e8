package ingest

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/headroomdb/headroom/storage/series"
)

// RefAppender is an Appender that also hands out a reference per series
// and appends by it, without the labels (storage.Appender does).
type RefAppender interface {
	Appender
	// AppendLabels is Append, returning the series' reference.
	AppendLabels(ls series.Labels, t int64, v float64) (uint64, error)
	// AppendRef appends to the series of ref; found is false when the
	// reference is stale (the caller appends by labels instead).
	AppendRef(ref uint64, t int64, v float64) (found bool, err error)
}

// refCache maps the bytes of a series' labels, as a request carries them
// (the label fields of a remote-write or Ingest TimeSeries, in order), to
// the storage's reference of that series. Agents send the same series
// in the same bytes request after request: a hit skips parsing, sorting,
// validating, hashing and comparing its labels (half of the server's CPU
// on the fleet benchmark's 11-label series). Bytes equal to bytes that
// were once parsed, validated and stored are valid by construction; a
// stale reference (the series left the head) falls back to the labels.
//
// Memory is bounded: each shard holds at most maxBytes of label bytes and
// is emptied when full (the next requests fill it again).
type refCache struct {
	seed   maphash.Seed
	shards [refShards]refShard
}

const (
	refShards = 64
	// refCacheBytes bounds the label bytes held, all shards together:
	// about 250,000 series of 11 labels.
	refCacheBytes = 64 << 20
)

type refShard struct {
	mu    sync.RWMutex
	m     map[uint64]refEntry
	bytes int
	hits  atomic.Int64 // for tests; a counter per shard, not one all cores fight over
}

type refEntry struct {
	raw string // a copy of the label bytes
	ref uint64
}

func newRefCache() *refCache { return &refCache{seed: maphash.MakeSeed()} }

// hitCount is how many lookups found their series.
func (c *refCache) hitCount() int64 {
	var n int64
	for i := range c.shards {
		n += c.shards[i].hits.Load()
	}
	return n
}

// get returns the reference of the series whose label bytes are raw, and
// the bytes' hash (for put).
func (c *refCache) get(raw []byte) (ref, h uint64, ok bool) {
	h = maphash.Bytes(c.seed, raw)
	sh := &c.shards[h%refShards]
	sh.mu.RLock()
	e, ok := sh.m[h]
	sh.mu.RUnlock()
	if ok && e.raw == string(raw) {
		sh.hits.Add(1)
		return e.ref, h, true
	}
	return 0, h, false
}

// put remembers raw (copied) as the bytes of the series ref.
func (c *refCache) put(h uint64, raw []byte, ref uint64) {
	sh := &c.shards[h%refShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil || sh.bytes+len(raw) > refCacheBytes/refShards {
		sh.m, sh.bytes = map[uint64]refEntry{}, 0
	}
	if old, ok := sh.m[h]; ok {
		sh.bytes -= len(old.raw)
	}
	sh.m[h] = refEntry{string(raw), ref}
	sh.bytes += len(raw)
}
