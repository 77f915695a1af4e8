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

// expiredSeries calls f with every series of tier's partitions [first,
// last) (raw: days) whose own retention (a rule's, or def) has passed the
// whole partition: what the partition-wide drop keeps for the longest
// rule but the series does not.
func (db *DB) expiredSeries(tier int, def time.Duration, first, last int64, f func(p int64, id uint64, ls series.Labels) error) error {
	now := db.opts.Now().UnixMilli()
	it, err := db.pdb.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	span, partOf := int64(msPerDay), func(p int64) uint32 { return uint32(p) }
	if tier >= 0 {
		span, partOf = db.tiers[tier].span, func(p int64) uint32 { return postingsPart(tier, p) }
	}
	labels := map[uint64]series.Labels{}
	for p := first; p < last; p++ {
		ids, err := selectDay(it, partOf(p), nil)
		if err != nil {
			return err
		}
		for _, id := range ids {
			ls, ok := labels[id]
			if !ok {
				if ls, err = db.storedLabels(id); err != nil {
					return fmt.Errorf("series %d: %w", id, err)
				}
				labels[id] = ls
			}
			if (p+1)*span > now-db.retentionOf(tier, ls, def).Milliseconds() {
				continue // the partition still has data this series keeps
			}
			if err := f(p, id, ls); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyRules drops, series by series, what the rules (or, for series no
// longer rule keeps, the tier's own retention) say has expired in the
// tier's partitions [first, last), which the partition-wide drop keeps
// for the longest rule.
func (db *DB) applyRules(b *pebble.Batch, tier int, def time.Duration, first, last int64) (int, error) {
	dropped := 0
	err := db.expiredSeries(tier, def, first, last, func(p int64, id uint64, ls series.Labels) error {
		for _, kind := range tierKinds {
			lo := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32([]byte{kind, byte(tier)}, uint32(p)), id)
			if err := b.DeleteRange(lo, prefixEnd(lo), nil); err != nil {
				return err
			}
		}
		dropped++
		return deletePostings(b, postingsPart(tier, p), id, ls)
	})
	return dropped, err
}

// applyRawRules is applyRules for raw days [first, last), each series'
// drop held at its own hold (rawHold), and recorded as the series' own
// floor ('F'): its later samples in a dropped day are merged into the
// tiers, not rolled up as if the day were whole.
func (db *DB) applyRawRules(b *pebble.Batch, def time.Duration, first, last int64, holds map[uint64]uint32) (int, error) {
	dropped := 0
	floors := map[uint64]uint32{} // new floors
	err := db.expiredSeries(-1, def, first, last, func(p int64, id uint64, ls series.Labels) error {
		if h, ok := holds[id]; ok && int64(h) <= p {
			return nil // not rolled up yet
		}
		for _, kind := range []byte{kindChunk, kindHistChunk} {
			lo := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32([]byte{kind}, uint32(p)), id)
			if err := b.DeleteRange(lo, prefixEnd(lo), nil); err != nil {
				return err
			}
		}
		floors[id] = max(floors[id], uint32(p)+1)
		dropped++
		return deletePostings(b, uint32(p), id, ls)
	})
	if err != nil {
		return dropped, err
	}
	for id, f := range floors {
		old, err := seriesFloor(db.pdb, id)
		if err != nil {
			return dropped, err
		}
		if f > old {
			if err := b.Set(floorKey(id), binary.BigEndian.AppendUint32(nil, f), nil); err != nil {
				return dropped, err
			}
			db.seriesFloors.Store(true)
			if s := db.series.getByID(id); s != nil {
				s.floorDay.Store(f)
			}
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
