package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// progress reports a long write on stderr: a redrawn bar on a terminal,
// a line every 10 seconds otherwise (logs stay readable).
type progress struct {
	w       io.Writer
	quiet   bool
	tty     bool
	label   string
	size    int64
	read    *atomic.Int64
	started time.Time
	last    time.Time
	drawn   bool
}

func newProgress(w io.Writer, quiet bool) *progress {
	p := &progress{w: w, quiet: quiet}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) startFile(label string, size int64, read *atomic.Int64) {
	p.done()
	p.label, p.size, p.read, p.started, p.last = label, size, read, time.Now(), time.Now()
}

func (p *progress) update(samples int64, line int) {
	if p.quiet {
		return
	}
	every := 10 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if time.Since(p.last) < every {
		return
	}
	p.last = time.Now()
	rate := float64(samples) / time.Since(p.started).Seconds()
	msg := fmt.Sprintf("%s: line %d, %d samples stored, %.0f samples/s", p.label, line, samples, rate)
	if p.size > 0 && p.read != nil {
		frac := min(float64(p.read.Load())/float64(p.size), 1)
		const width = 30
		n := int(frac * width)
		msg = fmt.Sprintf("[%s%s] %3.0f%% %s", strings.Repeat("=", n), strings.Repeat(" ", width-n), frac*100, msg)
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", msg)
		p.drawn = true
	} else {
		fmt.Fprintln(p.w, msg)
	}
}

// done ends the current bar's line.
func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
