package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"

	"github.com/headroomdb/headroom/storage/series"
)

// A Batch is one partition's part of a write request, as a node
// publishes it to the partition's subject and an owner applies it. The
// wire form (version 1; part of the cluster's format: never change):
//
//	version byte (1) | series count uvarint | per series:
//	  label count uvarint, each: name and value as uvarint length + bytes
//	  float samples uvarint, each: timestamp zigzag varint (the first
//	    absolute, then the delta from the previous) and 8 bytes IEEE 754
//	    little-endian
//	  histograms uvarint, each: timestamp as for floats and
//	    series.AppendHistogramBinary
//	| CRC-32C of everything before, big-endian
type Batch struct {
	Series []BatchSeries
}

// BatchSeries is one series' samples in a Batch.
type BatchSeries struct {
	Labels  series.Labels
	Samples []series.Sample
	Hists   []series.HistSample
}

const batchVersion = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt wraps a batch that does not decode.
var ErrCorrupt = errors.New("cluster: corrupt batch")

// PartitionOf is the partition of series ls among n: its label hash
// (series.Labels.Hash, which never changes) modulo n.
func PartitionOf(ls series.Labels, n int) int { return int(ls.Hash() % uint64(n)) }

// Split divides b by partition among n; each part keeps its series in
// b's order. A series lands in one part whole.
func Split(b *Batch, n int) map[int]*Batch { return split(b, n, nil) }

// split is Split, calling visit (when set) with each series' partition
// and label hash: the hash is a good part of a split's cost.
func split(b *Batch, n int, visit func(p int, h uint64, ls series.Labels)) map[int]*Batch {
	out := map[int]*Batch{}
	for _, s := range b.Series {
		h := s.Labels.Hash()
		p := int(h % uint64(n))
		if visit != nil {
			visit(p, h, s.Labels)
		}
		if out[p] == nil {
			out[p] = &Batch{}
		}
		out[p].Series = append(out[p].Series, s)
	}
	return out
}

// AppendBatch appends b's wire form to dst.
func AppendBatch(dst []byte, b *Batch) []byte {
	start := len(dst)
	dst = append(dst, batchVersion)
	dst = binary.AppendUvarint(dst, uint64(len(b.Series)))
	for _, s := range b.Series {
		dst = binary.AppendUvarint(dst, uint64(len(s.Labels)))
		for _, l := range s.Labels {
			dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
			dst = append(dst, l.Name...)
			dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
			dst = append(dst, l.Value...)
		}
		dst = binary.AppendUvarint(dst, uint64(len(s.Samples)))
		prev := int64(0)
		for _, x := range s.Samples {
			dst = binary.AppendVarint(dst, x.T-prev)
			prev = x.T
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x.V))
		}
		dst = binary.AppendUvarint(dst, uint64(len(s.Hists)))
		prev = 0
		for _, x := range s.Hists {
			dst = binary.AppendVarint(dst, x.T-prev)
			prev = x.T
			dst = series.AppendHistogramBinary(dst, x.H)
		}
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func byName(a, b series.Label) int { return strings.Compare(a.Name, b.Name) }

// take returns n elements of the slab, capped at n, starting a new slab
// of max(block, n) when the current one lacks room: a batch's series
// share few allocations, and none is copied to grow.
func take[T any](slab *[]T, n, block int) []T {
	if cap(*slab)-len(*slab) < n {
		*slab = make([]T, 0, max(block, n))
	}
	from := len(*slab)
	*slab = (*slab)[:from+n]
	return (*slab)[from : from+n : from+n]
}

// DecodeBatch decodes a batch's wire form. It checks the checksum first
// and never panics: bytes from the stream are outside bytes. Label sets
// come back sorted (as series.Labels must be). Labels, label strings and
// samples share a few allocations a batch, not a few a series: an
// owner decodes every message (the store copies what it keeps).
func DecodeBatch(b []byte) (*Batch, error) {
	bad := func(format string, args ...any) (*Batch, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	if len(b) < 5 {
		return bad("%d bytes", len(b))
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return bad("checksum mismatch")
	}
	if body[0] != batchVersion {
		return bad("version %d", body[0])
	}
	p := body[1:]
	// One string of the body: label names and values are its substrings.
	all := string(p)
	at := func() int { return len(all) - len(p) }
	uv := func() (uint64, bool) {
		x, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return x, true
	}
	str := func() (string, bool) {
		n, ok := uv()
		if !ok || n > uint64(len(p)) {
			return "", false
		}
		off := at()
		p = p[n:]
		return all[off : off+int(n)], true
	}
	ts := func(prev int64) (int64, bool) {
		d, n := binary.Varint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return prev + d, true
	}
	ns, ok := uv()
	// Each series takes at least three bytes: counts bound the allocation.
	if !ok || ns > uint64(len(p)) {
		return bad("series count")
	}
	out := &Batch{Series: make([]BatchSeries, 0, ns)}
	// The series' labels and samples are windows of these slabs.
	var labels []series.Label
	var samples []series.Sample
	for i := uint64(0); i < ns; i++ {
		var s BatchSeries
		nl, ok := uv()
		// A label takes two bytes at least.
		if !ok || nl > uint64(len(p))/2 {
			return bad("series %d: label count", i)
		}
		s.Labels = take(&labels, int(nl), 4096)
		for j := range s.Labels {
			name, ok1 := str()
			value, ok2 := str()
			if !ok1 || !ok2 {
				return bad("series %d: label %d", i, j)
			}
			s.Labels[j] = series.Label{Name: name, Value: value}
		}
		if !slices.IsSortedFunc(s.Labels, byName) {
			slices.SortFunc(s.Labels, byName)
		}
		nf, ok := uv()
		if !ok || nf > uint64(len(p))/9 {
			return bad("series %s: sample count", s.Labels)
		}
		if nf > 0 {
			s.Samples = take(&samples, int(nf), 8192)
		}
		t := int64(0)
		for k := range s.Samples {
			if t, ok = ts(t); !ok || len(p) < 8 {
				return bad("series %s: sample %d", s.Labels, k)
			}
			s.Samples[k] = series.Sample{T: t, V: math.Float64frombits(binary.LittleEndian.Uint64(p))}
			p = p[8:]
		}
		nh, ok := uv()
		if !ok || nh > uint64(len(p)) {
			return bad("series %s: histogram count", s.Labels)
		}
		t = 0
		for k := uint64(0); k < nh; k++ {
			if t, ok = ts(t); !ok {
				return bad("series %s: histogram %d", s.Labels, k)
			}
			h, n, err := series.ReadHistogramBinary(p)
			if err != nil {
				return bad("series %s: histogram %d: %v", s.Labels, k, err)
			}
			p = p[n:]
			s.Hists = append(s.Hists, series.HistSample{T: t, H: h})
		}
		out.Series = append(out.Series, s)
	}
	if len(p) != 0 {
		return bad("%d bytes after the last series", len(p))
	}
	return out, nil
}
