package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/headroomdb/headroom/storage/series"
)

// Metric metadata (type, unit, help) for the whole cluster. A write's
// metadata reaches the node that received it, not the owners of its
// series, and /api/v1/metadata answers from the store of the node
// asked: so each node puts the metadata it receives in the bucket
// HEADROOM_METADATA (no TTL, a key a metric), and every node keeps its
// store in step with the bucket through a watch. A metric's metadata
// costs one Put a node when it first comes or changes, not one a write.

// MetadataBucket holds every metric's metadata.
const MetadataBucket = "HEADROOM_METADATA"

// localMetadata is a Local that keeps metric metadata (storage.DB does).
type localMetadata interface {
	SetMetadata(metric string, md series.Metadata) error
}

// metaCache is the metadata this node has put or seen in the bucket.
type metaCache struct {
	mu sync.Mutex
	m  map[string]series.Metadata
}

func (c *metaCache) has(metric string, md series.Metadata) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.m[metric]
	return ok && old == md
}

func (c *metaCache) set(metric string, md series.Metadata) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]series.Metadata{}
	}
	c.m[metric] = md
}

// metadataKey is a metric's key in the bucket: metric names may hold
// ':', which keys may not.
func metadataKey(metric string) string {
	return "m." + base64.RawURLEncoding.EncodeToString([]byte(metric))
}

func metricOfKey(key string) (string, bool) {
	s, ok := strings.CutPrefix(key, "m.")
	if !ok {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err == nil && len(b) > 0
}

// SetMetadata keeps a metric's metadata in this node's store and, when
// new or changed, in the bucket, from which every node's store takes it
// (ingest.MetadataSetter).
func (n *Node) SetMetadata(metric string, md series.Metadata) error {
	lm, ok := n.local.(localMetadata)
	if !ok {
		return nil
	}
	if n.meta.has(metric, md) {
		return nil
	}
	// The store checks it (its size) first.
	if err := lm.SetMetadata(metric, md); err != nil {
		return err
	}
	b, err := json.Marshal(md)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	if _, err := n.metaKV.Put(ctx, metadataKey(metric), b); err != nil {
		return fmt.Errorf("cluster: metadata of %s not shared: %w", metric, err)
	}
	n.meta.set(metric, md)
	return nil
}

// watchMetadata keeps this node's store in step with the bucket: every
// metric's metadata at the start, then each change as it comes.
func (n *Node) watchMetadata() {
	defer n.wg.Done()
	lm, ok := n.local.(localMetadata)
	if !ok {
		return
	}
	for n.ctx.Err() == nil {
		w, err := n.metaKV.WatchAll(n.ctx, jetstream.IgnoreDeletes())
		if err != nil {
			n.log.Warn("cluster: cannot watch the metadata bucket", "err", err)
			select {
			case <-n.ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		n.applyMetadata(w, lm)
		w.Stop()
	}
}

func (n *Node) applyMetadata(w jetstream.KeyWatcher, lm localMetadata) {
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue // the end of the values at the start
			}
			metric, ok := metricOfKey(e.Key())
			var md series.Metadata
			if !ok || json.Unmarshal(e.Value(), &md) != nil {
				n.log.Warn("cluster: metadata entry skipped", "key", e.Key())
				continue
			}
			// Applied even when this node put it: the bucket's order
			// is the truth when two nodes change a metric at once (the
			// store skips what it has).
			if err := lm.SetMetadata(metric, md); err != nil {
				n.log.Warn("cluster: metadata not kept", "metric", metric, "err", err)
				continue
			}
			n.meta.set(metric, md)
		}
	}
}
