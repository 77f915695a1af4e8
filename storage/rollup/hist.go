package rollup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

// Native histograms in a tier. Prometheus's rate over histograms is the
// last histogram minus the first, at the coarsest schema of the window,
// plus the histogram before each counter reset, added back in time order;
// its warnings depend on the window's schemas, kinds of buckets and
// hints. A bucket therefore keeps the few samples that decide those
// answers, as they were: its first and last, the one before each reset
// inside it (and, when the second sample resets, that second one, whose
// layout Prometheus starts from), with what the others contribute
// (their count, smallest schema, kinds of buckets and hints). A window of
// buckets then gives rate, increase and delta bit for bit as the raw
// samples do, with the same operations in the same order, whatever its
// length: a counter resets rarely, so a bucket keeps two samples. A
// merged sum of the histograms is not kept: sum_over_time and
// avg_over_time of histograms read raw samples.

// Roles of a sample a HistBucket keeps (a sample may have several).
const (
	RoleFirst    = 1 << 0 // the bucket's first sample
	RolePreReset = 1 << 1 // the next sample is a counter reset
	RoleSecond   = 1 << 2 // the bucket's second sample, after a reset at it
	RoleLast     = 1 << 3 // the bucket's last sample
)

// Flags of the samples after a bucket's first.
const (
	HistRestCustom = 1 << 0 // one has custom buckets
	HistRestExp    = 1 << 1 // one has exponential buckets
	HistRestGauge  = 1 << 2 // one is a gauge histogram
)

// ResetFunc says whether histogram cur, the sample after prev, is a
// counter reset (Prometheus's FloatHistogram.DetectReset: the storage
// engine supplies it, this package knowing no PromQL).
type ResetFunc func(cur, prev *series.Histogram) bool

// KeptHist is a sample a HistBucket keeps, with its roles.
type KeptHist struct {
	T    int64
	H    *series.Histogram
	Role uint8
}

// HistBucket aggregates the native histogram samples of one series in
// (Start, Start+resolution].
type HistBucket struct {
	Start int64
	Count int64
	// Kept: the samples with a role, in time order; the first is the
	// bucket's first, the last its last.
	Kept []KeptHist
	// Rest describes the samples after the first (HistRest*); MinSchema
	// is their smallest schema (meaningless when Count is 1).
	Rest      uint8
	MinSchema int32
}

// First and Last are the bucket's first and last samples.
func (b *HistBucket) First() *KeptHist { return &b.Kept[0] }
func (b *HistBucket) Last() *KeptHist  { return &b.Kept[len(b.Kept)-1] }

// FirstResets says whether the bucket's second sample is a counter reset.
func (b *HistBucket) FirstResets() bool { return b.Kept[0].Role&RolePreReset != 0 }

// Second is the bucket's second sample when it is a reset (nil if not).
func (b *HistBucket) Second() *KeptHist {
	for i := 1; i < len(b.Kept); i++ {
		if b.Kept[i].Role&RoleSecond != 0 {
			return &b.Kept[i]
		}
	}
	return nil
}

// HistRest describes h as Rest does.
func HistRest(h *series.Histogram) uint8 { return restOf(h) }

// restOf describes h for Rest.
func restOf(h *series.Histogram) uint8 {
	r := uint8(HistRestExp)
	if h.Schema == series.CustomBucketsSchema {
		r = HistRestCustom
	}
	if h.CounterReset == 3 {
		r |= HistRestGauge
	}
	return r
}

// Add adds a sample after those added already; h is the caller's to
// keep (the bucket keeps the pointer). Stale markers are the caller's to
// skip.
func (b *HistBucket) Add(t int64, h *series.Histogram, reset ResetFunc) {
	x := KeptHist{T: t, H: h, Role: RoleLast}
	if b.Count == 0 {
		x.Role |= RoleFirst
		b.Kept = append(b.Kept[:0], x)
		b.Count = 1
		return
	}
	b.join(x, reset)
	b.Rest |= restOf(h)
	if b.Count == 1 || h.Schema < b.MinSchema {
		b.MinSchema = h.Schema
	}
	b.Count++
}

// AddLate adds a sample at any time, before, among or after the bucket's
// samples (a backfill into a bucket whose raw samples are gone), as
// Bucket.AddLate does floats: count, the first and last samples, the
// kinds of buckets and the smallest schema stay exact; a reset is seen
// between the new sample and the first or last it becomes next to, and
// not for a sample among the others (the neighbours it falls between
// are not known any more).
func (b *HistBucket) AddLate(t int64, h *series.Histogram, reset ResetFunc) {
	if b.Count == 0 || t > b.Last().T {
		b.Add(t, h, reset)
		return
	}
	old := b.First()
	if t < old.T {
		x := KeptHist{T: t, H: h, Role: RoleFirst}
		if reset(old.H, h) {
			x.Role |= RolePreReset
		}
		ms, rest := old.H.Schema, restOf(old.H)
		if b.Count > 1 {
			ms = min(ms, b.MinSchema)
		}
		// The old first is the second sample now: its old successor is
		// not, and it is kept only for the roles it still has.
		kept := []KeptHist{x}
		for i, k := range b.Kept {
			if i == 0 {
				k.Role &^= RoleFirst
				if x.Role&RolePreReset != 0 {
					k.Role |= RoleSecond
				}
			} else {
				k.Role &^= RoleSecond
			}
			if k.Role != 0 {
				kept = append(kept, k)
			}
		}
		b.Kept = append(b.Kept[:0], kept...)
		b.Rest |= rest
		b.MinSchema = ms
		b.Count++
		return
	}
	b.Rest |= restOf(h)
	if b.Count == 1 || h.Schema < b.MinSchema {
		b.MinSchema = h.Schema
	}
	b.Count++
}

// join appends x, the sample after the bucket's last, keeping the last
// only if it has another role.
func (b *HistBucket) join(x KeptHist, reset ResetFunc) {
	prev := &b.Kept[len(b.Kept)-1]
	prev.Role &^= RoleLast
	if reset(x.H, prev.H) {
		prev.Role |= RolePreReset
		if b.Count == 1 {
			x.Role |= RoleSecond
		}
	}
	if prev.Role == 0 {
		b.Kept[len(b.Kept)-1] = x
		return
	}
	b.Kept = append(b.Kept, x)
}

// Merge adds o, a bucket of the same series whose samples all come after
// b's, into b, as if its samples had been added one by one. Start stays
// b's; b shares o's histograms.
func (b *HistBucket) Merge(o *HistBucket, reset ResetFunc) {
	if o.Count == 0 {
		return
	}
	if b.Count == 0 {
		start := b.Start
		*b = HistBucket{Start: start, Count: o.Count, Kept: append(b.Kept[:0], o.Kept...), Rest: o.Rest, MinSchema: o.MinSchema}
		return
	}
	first := o.Kept[0]
	first.Role &^= RoleFirst
	count := b.Count
	b.join(first, reset)
	if b.Kept[len(b.Kept)-1].Role == 0 {
		// o's first, now a sample in the middle of b: its successor does
		// not reset, and it is not the last.
		b.Kept = b.Kept[:len(b.Kept)-1]
	}
	for _, x := range o.Kept[1:] {
		// o's second sample is not b's.
		if x.Role &^= RoleSecond; x.Role != 0 {
			b.Kept = append(b.Kept, x)
		}
	}
	ms := first.H.Schema
	if o.Count > 1 {
		ms = min(ms, o.MinSchema)
	}
	if count > 1 {
		ms = min(ms, b.MinSchema)
	}
	b.MinSchema = ms
	b.Rest |= restOf(first.H) | o.Rest
	b.Count += o.Count
}

// Histogram block format (docs/format/rollup.md), one Pebble value per
// series and tier partition, beside the column block:
//
//	version byte (1) | bucket count uvarint | first start, zigzag varint
//	per bucket: start delta from the previous (uvarint; 0 for the first),
//	            sample count uvarint, kept samples uvarint, Rest byte,
//	            and, with more than one sample, MinSchema zigzag varint
//	then per kept sample, in order: a byte, roles (bits 0-3) and the sample's
//	            counter reset hint (bits 4-5)
//	twice, the buckets' first samples, then their others, in order:
//	            chunk count uvarint, then each chunk: uvarint length and
//	            a storage/chunk histogram chunk (stored with the gauge
//	            hint, so that no hint and no fall of the counts cuts a
//	            chunk; the byte above restores each sample's own)
//	CRC-32C of everything before, big-endian
const histBlockVersion = 1

// AppendHistBlock appends the histogram block of bs (in increasing Start
// order, none empty) to dst.
func AppendHistBlock(dst []byte, bs []HistBucket) ([]byte, error) {
	if len(bs) == 0 || len(bs) > MaxBlockBuckets {
		return nil, fmt.Errorf("histogram rollup block of %d buckets (1 to %d)", len(bs), MaxBlockBuckets)
	}
	start := len(dst)
	dst = append(dst, histBlockVersion)
	dst = binary.AppendUvarint(dst, uint64(len(bs)))
	dst = binary.AppendVarint(dst, bs[0].Start)
	prev := bs[0].Start
	for i := range bs {
		b := &bs[i]
		if b.Count <= 0 || len(b.Kept) == 0 || b.Start < prev {
			return nil, fmt.Errorf("histogram rollup bucket at %d: empty or out of order", b.Start)
		}
		dst = binary.AppendUvarint(dst, uint64(b.Start-prev))
		prev = b.Start
		dst = binary.AppendUvarint(dst, uint64(b.Count))
		dst = binary.AppendUvarint(dst, uint64(len(b.Kept)))
		dst = append(dst, b.Rest)
		if b.Count > 1 {
			dst = binary.AppendVarint(dst, int64(b.MinSchema))
		}
	}
	for i := range bs {
		for _, k := range bs[i].Kept {
			dst = append(dst, k.Role|k.H.CounterReset<<4)
		}
	}
	// Two streams: the buckets' first samples, then their others. Each
	// is a steady series (a sample every resolution, counts grown by a
	// bucket's worth), which the chunk codec's deltas of deltas keep
	// small; one stream alternating firsts and lasts (a minute, then
	// 59) cost twice the bytes and the decoding time.
	var err error
	for _, firsts := range []bool{true, false} {
		if dst, err = appendHistStream(dst, bs, firsts); err != nil {
			return nil, err
		}
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli)), nil
}

// appendHistStream appends the chunks of the buckets' first kept samples
// (firsts) or of their others: a uvarint count, then each chunk as a
// uvarint length and its bytes.
func appendHistStream(dst []byte, bs []HistBucket, firsts bool) ([]byte, error) {
	var chunks [][]byte
	a := chunk.NewHistogramAppender()
	var h series.Histogram
	for i := range bs {
		kept := bs[i].Kept[1:]
		if firsts {
			kept = bs[i].Kept[:1]
		}
		for _, k := range kept {
			h = *k.H
			h.CounterReset = 3
			err := a.Append(k.T, &h)
			if errors.Is(err, chunk.ErrLayout) || errors.Is(err, chunk.ErrFull) {
				chunks = append(chunks, append([]byte(nil), a.Bytes()...))
				a = chunk.NewHistogramAppender()
				err = a.Append(k.T, &h)
			}
			if err != nil {
				return nil, fmt.Errorf("histogram rollup bucket at %d, sample at %d: %w", bs[i].Start, k.T, err)
			}
		}
	}
	if a.Count() > 0 {
		chunks = append(chunks, a.Bytes())
	}
	dst = binary.AppendUvarint(dst, uint64(len(chunks)))
	for _, c := range chunks {
		dst = binary.AppendUvarint(dst, uint64(len(c)))
		dst = append(dst, c...)
	}
	return dst, nil
}

// decodeHistStream decodes a stream appendHistStream wrote from the
// front of p, appending its samples to dst (chunk.AppendHistograms: the
// samples of a chunk share its layout and one allocation of counts). It
// returns what follows the stream.
func decodeHistStream(dst []KeptHist, p []byte, most int) ([]KeptHist, []byte, error) {
	nc, n := binary.Uvarint(p)
	if n <= 0 || nc > uint64(most) {
		return dst, p, errors.New("chunk count")
	}
	p = p[n:]
	var hs []series.HistSample
	for c := uint64(0); c < nc; c++ {
		l, n := binary.Uvarint(p)
		if n <= 0 || l > uint64(len(p)-n) {
			return dst, p, fmt.Errorf("chunk %d length", c)
		}
		var err error
		if hs, err = chunk.AppendHistograms(hs[:0], p[n:n+int(l)]); err != nil {
			return dst, p, err
		}
		p = p[n+int(l):]
		if len(dst)+len(hs) > most {
			return dst, p, errors.New("more samples than kept")
		}
		for _, x := range hs {
			dst = append(dst, KeptHist{T: x.T, H: x.H})
		}
	}
	return dst, p, nil
}

// DecodeHistBlock decodes a histogram block, appending its buckets to
// dst; their histograms are new (the caller's). The checksum is checked
// first: a damaged block is an error, never wrong numbers.
func DecodeHistBlock(dst []HistBucket, blk []byte) ([]HistBucket, error) {
	bad := func(what string) ([]HistBucket, error) {
		return dst, fmt.Errorf("%w: histogram block: %s", ErrCorrupt, what)
	}
	if len(blk) < 5 {
		return bad("too short")
	}
	body := blk[:len(blk)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(blk[len(blk)-4:]) {
		return bad("checksum mismatch")
	}
	if body[0] != histBlockVersion {
		return bad(fmt.Sprintf("version %d", body[0]))
	}
	p := body[1:]
	uv := func() (uint64, bool) {
		x, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return x, true
	}
	sv := func() (int64, bool) {
		x, n := binary.Varint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return x, true
	}
	n, ok := uv()
	if !ok || n == 0 || n > MaxBlockBuckets {
		return bad("bucket count")
	}
	at, ok := sv()
	if !ok {
		return bad("first start")
	}
	base := len(dst)
	total := 0
	for i := uint64(0); i < n; i++ {
		d, ok1 := uv()
		c, ok2 := uv()
		k, ok3 := uv()
		if !ok1 || !ok2 || !ok3 || len(p) < 1 || c == 0 || k == 0 || k > c || c > 1<<40 {
			return bad(fmt.Sprintf("bucket %d header", i))
		}
		at += int64(d)
		b := HistBucket{Start: at, Count: int64(c), Rest: p[0], Kept: make([]KeptHist, k)}
		p = p[1:]
		if c > 1 {
			ms, ok := sv()
			if !ok {
				return bad(fmt.Sprintf("bucket %d schema", i))
			}
			b.MinSchema = int32(ms)
		}
		dst = append(dst, b)
		total += int(k)
	}
	if len(p) < total {
		return bad("roles")
	}
	roles := p[:total]
	p = p[total:]
	firsts, p, err := decodeHistStream(nil, p, int(n))
	if err != nil {
		return bad("first samples: " + err.Error())
	}
	others, p, err := decodeHistStream(nil, p, total-int(n))
	if err != nil {
		return bad("other samples: " + err.Error())
	}
	if len(firsts) != int(n) || len(others) != total-int(n) || len(p) != 0 {
		return bad("kept samples do not match the chunks")
	}
	ri, oi := 0, 0
	for bi := base; bi < len(dst); bi++ {
		kept := dst[bi].Kept
		for ki := range kept {
			x := &firsts[bi-base]
			if ki > 0 {
				x = &others[oi]
				oi++
			}
			x.H.CounterReset = roles[ri] >> 4
			kept[ki] = KeptHist{T: x.T, H: x.H, Role: roles[ri] & 0xf}
			ri++
		}
	}
	return dst, nil
}
