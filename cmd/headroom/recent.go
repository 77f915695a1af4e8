package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// recentLog keeps the server's last warnings and errors, for the
// console's status view (/api/v1/status/errors): what went wrong lately
// without a shell on the machine.
type recentLog struct {
	mu   sync.Mutex
	ring []recentEntry
	next int
	full bool
}

// recentEntry is one kept log record.
type recentEntry struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
}

const recentKept = 50

func (r *recentLog) add(e recentEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ring == nil {
		r.ring = make([]recentEntry, recentKept)
	}
	r.ring[r.next] = e
	r.next = (r.next + 1) % recentKept
	r.full = r.full || r.next == 0
}

// entries returns the kept records, newest first.
func (r *recentLog) entries() []recentEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = recentKept
	}
	out := make([]recentEntry, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.ring[(r.next-i+recentKept)%recentKept])
	}
	return out
}

// handler wraps h: records at Warn or above are also kept.
func (r *recentLog) handler(h slog.Handler) slog.Handler { return recentHandler{h, r, nil} }

type recentHandler struct {
	slog.Handler
	r     *recentLog
	attrs []slog.Attr
}

func (h recentHandler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(rec.Message)
		add := func(a slog.Attr) bool {
			b.WriteString(" " + a.Key + "=" + a.Value.String())
			return true
		}
		for _, a := range h.attrs {
			add(a)
		}
		rec.Attrs(add)
		h.r.add(recentEntry{Time: rec.Time.UTC(), Level: rec.Level.String(), Message: b.String()})
	}
	if !h.Handler.Enabled(ctx, rec.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, rec)
}

// Enabled lets warnings through to be kept whatever the log level.
func (h recentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.Handler.Enabled(ctx, l)
}

func (h recentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recentHandler{h.Handler.WithAttrs(as), h.r, append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h recentHandler) WithGroup(name string) slog.Handler {
	return recentHandler{h.Handler.WithGroup(name), h.r, h.attrs}
}
