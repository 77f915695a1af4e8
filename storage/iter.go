package storage

import (
	"math"

	"github.com/headroomdb/headroom/storage/chunk"
	"github.com/headroomdb/headroom/storage/series"
)

// chunkRef is one chunk to read: its bytes and its time range.
type chunkRef struct {
	minT, maxT int64
	b          []byte
}

// chainIter walks non-overlapping chunks in time order. Seek skips whole
// chunks by their maxT without decoding them.
type chainIter struct {
	chunks []chunkRef
	i      int // index of the chunk cur reads; -1 before the first
	cur    chunk.Iterator
	err    error
}

func newChainIter(chunks []chunkRef) *chainIter { return &chainIter{chunks: chunks, i: -1} }

func (c *chainIter) Next() bool {
	if c.err != nil {
		return false
	}
	if c.i >= 0 && c.cur.Next() {
		return true
	}
	return c.nextChunk(math.MinInt64)
}

// nextChunk opens the next chunk whose maxT >= t and moves to its first
// sample at or after t.
func (c *chainIter) nextChunk(t int64) bool {
	if c.i >= 0 && c.cur.Err() != nil {
		c.err = c.cur.Err()
		return false
	}
	for c.i+1 < len(c.chunks) {
		c.i++
		if c.chunks[c.i].maxT < t {
			continue
		}
		c.cur.Reset(c.chunks[c.i].b)
		if c.cur.Seek(t) {
			return true
		}
		if c.cur.Err() != nil {
			c.err = c.cur.Err()
			return false
		}
	}
	c.i = len(c.chunks)
	return false
}

func (c *chainIter) Seek(t int64) bool {
	if c.err != nil {
		return false
	}
	if c.i >= 0 && c.i < len(c.chunks) {
		if ct, _ := c.cur.At(); c.cur.Count() > 0 && ct >= t {
			return true
		}
		if c.chunks[c.i].maxT >= t && c.cur.Seek(t) {
			return true
		}
	}
	return c.nextChunk(t)
}

func (c *chainIter) At() (int64, float64) { return c.cur.At() }
func (c *chainIter) Err() error           { return c.err }

// mergeIter merges sources that may overlap; on equal timestamps the
// source with the higher index wins (sources are passed oldest writes
// first), which is how "last write wins" reaches queries.
type mergeIter struct {
	its     []series.Iterator
	ok      []bool
	started bool
	t       int64
	v       float64
	err     error
}

func (m *mergeIter) pick() bool {
	best := -1
	var bt int64
	for i, it := range m.its {
		if !m.ok[i] {
			if err := it.Err(); err != nil && m.err == nil {
				m.err = err
			}
			continue
		}
		t, _ := it.At()
		if best < 0 || t <= bt {
			best, bt = i, t
		}
	}
	if m.err != nil || best < 0 {
		return false
	}
	m.t, m.v = m.its[best].At()
	return true
}

func (m *mergeIter) Next() bool {
	if m.err != nil {
		return false
	}
	for i, it := range m.its {
		if !m.started {
			m.ok[i] = it.Next()
		} else if m.ok[i] {
			if t, _ := it.At(); t == m.t {
				m.ok[i] = it.Next()
			}
		}
	}
	m.started = true
	return m.pick()
}

func (m *mergeIter) Seek(t int64) bool {
	if m.err != nil {
		return false
	}
	if m.started && m.t >= t {
		return true
	}
	for i, it := range m.its {
		if !m.started || m.ok[i] {
			m.ok[i] = it.Seek(t)
		}
	}
	m.started = true
	return m.pick()
}

func (m *mergeIter) At() (int64, float64) { return m.t, m.v }
func (m *mergeIter) Err() error           { return m.err }

// clipIter limits an iterator to [mint, maxt].
type clipIter struct {
	it         series.Iterator
	mint, maxt int64
	started    bool
	done       bool
}

func (c *clipIter) Next() bool {
	if c.done {
		return false
	}
	var ok bool
	if !c.started {
		c.started = true
		ok = c.it.Seek(c.mint)
	} else {
		ok = c.it.Next()
	}
	return c.check(ok)
}

func (c *clipIter) check(ok bool) bool {
	if !ok {
		c.done = true
		return false
	}
	if t, _ := c.it.At(); t > c.maxt {
		c.done = true
		return false
	}
	return true
}

func (c *clipIter) Seek(t int64) bool {
	if c.done {
		return false
	}
	c.started = true
	if t < c.mint {
		t = c.mint
	}
	return c.check(c.it.Seek(t))
}

// Chunks is series.ChunkSource: a chain of chunks (one source, the
// usual case) as it is.
func (c *clipIter) Chunks() ([][]byte, bool) {
	ch, ok := c.it.(*chainIter)
	if !ok || c.started || ch.i >= 0 {
		return nil, false
	}
	out := make([][]byte, len(ch.chunks))
	for i, r := range ch.chunks {
		out[i] = r.b
	}
	return out, true
}

// AppendSamples is series.SampleAppender: over a chain of chunks (one
// source, the usual case) it decodes chunk by chunk in a tight loop.
func (c *clipIter) AppendSamples(dst []series.Sample) []series.Sample {
	ch, ok := c.it.(*chainIter)
	if !ok || c.started {
		for c.Next() {
			t, v := c.At()
			dst = append(dst, series.Sample{T: t, V: v})
		}
		return dst
	}
	c.started, c.done = true, true
	return ch.appendRange(dst, c.mint, c.maxt)
}

// appendRange appends the samples in [mint, maxt] of every chunk, from
// the first, and exhausts the iterator.
func (c *chainIter) appendRange(dst []series.Sample, mint, maxt int64) []series.Sample {
	defer func() { c.i = len(c.chunks) }()
	for i := range c.chunks {
		ck := &c.chunks[i]
		if ck.maxT < mint {
			continue
		}
		if ck.minT > maxt {
			break
		}
		c.cur.Reset(ck.b)
		var past bool
		dst, past = chunk.AppendRange(&c.cur, dst, mint, maxt)
		if err := c.cur.Err(); err != nil {
			c.err = err
			return dst
		}
		if past {
			return dst
		}
	}
	return dst
}

func (c *clipIter) At() (int64, float64) { return c.it.At() }
func (c *clipIter) Err() error           { return c.it.Err() }
