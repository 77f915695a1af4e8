package storage

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/headroomdb/headroom/storage/series"
)

// RetentionRule keeps the series its matchers select for a retention of
// their own in one tier: raw samples (Tier -1) or a rollup tier (an index
// into Options.Tiers). The first rule that matches a series and names the
// tier wins; series no rule matches keep the tier's own retention. Rules
// may be shorter (drop dev series' raw data after 3 days) or longer (keep
// node_* hourly rollups for 5 years) than the tier's.
type RetentionRule struct {
	Matchers  []*series.Matcher
	Tier      int
	Retention time.Duration
}

func (r RetentionRule) matches(ls series.Labels) bool {
	for _, m := range r.Matchers {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

func validateRules(rs []RetentionRule, tiers int) error {
	for i, r := range rs {
		if r.Tier < -1 || r.Tier >= tiers {
			return fmt.Errorf("retention rule %d: tier %d: want -1 (raw) or a tier index below %d", i, r.Tier, tiers)
		}
		if r.Retention <= 0 {
			return fmt.Errorf("retention rule %d: retention %v must be positive", i, r.Retention)
		}
		if len(r.Matchers) == 0 {
			return fmt.Errorf("retention rule %d: no matchers", i)
		}
	}
	return nil
}

// tierRetention is a tier's default retention and the longest any rule
// gives it: partitions before the longest go for every series at once;
// between the two, series by series.
func (db *DB) tierRetention(tier int) (def, longest time.Duration) {
	def = db.opts.Retention
	if tier >= 0 {
		def = db.tiers[tier].Retention
	}
	longest = def
	for _, r := range db.opts.RetentionRules {
		if r.Tier == tier {
			longest = max(longest, r.Retention)
		}
	}
	return def, longest
}

// retentionOf is series ls's retention in tier.
func (db *DB) retentionOf(tier int, ls series.Labels, def time.Duration) time.Duration {
	for _, r := range db.opts.RetentionRules {
		if r.Tier == tier && r.matches(ls) {
			return r.Retention
		}
	}
	return def
}

// applyRules drops, series by series, what the rules (or, for series no
// longer rule keeps, the tier's own retention) say has expired in the
// partitions that the partition-wide drop keeps for the longest rule:
// [first, last) of the tier's partitions (raw: days). hold bounds raw
// deletions: days not yet rolled up stay.
func (db *DB) applyRules(b *pebble.Batch, tier int, def time.Duration, first, last int64, hold int64) (int, error) {
	if first >= last {
		return 0, nil
	}
	now := db.opts.Now().UnixMilli()
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	span, kinds := int64(msPerDay), []byte{kindChunk}
	partOf := func(p int64) uint32 { return uint32(p) }
	if tier >= 0 {
		span, kinds = db.tiers[tier].span, []byte{kindRollup, kindSketch}
		partOf = func(p int64) uint32 { return postingsPart(tier, p) }
	}
	dropped := 0
	labels := map[uint64]series.Labels{}
	for p := first; p < last; p++ {
		ids, err := selectDay(it, partOf(p), nil)
		if err != nil {
			return dropped, err
		}
		for _, id := range ids {
			ls, ok := labels[id]
			if !ok {
				if ls, err = db.storedLabels(id); err != nil {
					return dropped, fmt.Errorf("series %d: %w", id, err)
				}
				labels[id] = ls
			}
			cut := now - db.retentionOf(tier, ls, def).Milliseconds()
			if tier < 0 {
				cut = min(cut, hold)
			}
			if (p+1)*span > cut {
				continue // the partition still has data this series keeps
			}
			// The series' data in the partition: chunks or blocks, and its
			// postings there.
			for _, kind := range kinds {
				var lo []byte
				if tier < 0 {
					lo = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32([]byte{kind}, uint32(p)), id)
				} else {
					lo = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32([]byte{kind, byte(tier)}, uint32(p)), id)
				}
				if err := b.DeleteRange(lo, prefixEnd(lo), nil); err != nil {
					return dropped, err
				}
			}
			for _, l := range ls {
				k := binary.BigEndian.AppendUint64(postingPrefix(nil, partOf(p), l.Name, l.Value), id)
				if err := b.Delete(k, nil); err != nil {
					return dropped, err
				}
			}
			dropped++
		}
	}
	return dropped, nil
}

func (db *DB) hasRules(tier int) bool {
	for _, r := range db.opts.RetentionRules {
		if r.Tier == tier {
			return true
		}
	}
	return false
}

// shortestRule is the shortest retention a rule gives in tier (a very
// long time when none).
func (db *DB) shortestRule(tier int) time.Duration {
	d := time.Duration(1<<63 - 1)
	for _, r := range db.opts.RetentionRules {
		if r.Tier == tier {
			d = min(d, r.Retention)
		}
	}
	return d
}
