package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/golang/snappy"

	"github.com/headroomdb/headroom/storage/series"
)

// RemoteWrite serves Prometheus remote-write 1.0 (POST /api/v1/write): a
// snappy block-compressed protobuf WriteRequest. 204 when stored, 400 with
// a message for a bad body or series, 413 for a body over the limit, 429
// over a request limit, 503 when the commit failed.
type RemoteWrite struct {
	db   *appenderPool
	opts Options
	// MaxBodyBytes bounds the compressed body, read before anything is
	// decompressed; MaxDecodedBytes bounds what snappy may expand it to
	// (checked from its header, before decoding).
	MaxBodyBytes    int64
	MaxDecodedBytes int
	// BodyTimeout bounds how long the body may take to arrive. A body is
	// read before the request takes a write slot, so that clients that
	// trickle their bytes hold a connection, not the server's writes.
	BodyTimeout time.Duration
}

// NewRemoteWrite returns the handler with 10 MiB compressed and 64 MiB
// decoded body limits, and 10 s for a body to arrive.
func NewRemoteWrite(db Appendable, o Options) *RemoteWrite {
	o.Limits = o.Limits.withDefaults()
	return &RemoteWrite{db: newAppenderPool(db), opts: o, MaxBodyBytes: 10 << 20, MaxDecodedBytes: 64 << 20, BodyTimeout: 10 * time.Second}
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// refuse answers a request refused before it was decoded.
func (h *RemoteWrite) refuse(w http.ResponseWriter, code int, why, msg string) {
	h.opts.Metrics.Reject("remote_write", why)
	http.Error(w, msg, code)
}

func (h *RemoteWrite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "remote write needs POST", http.StatusMethodNotAllowed)
		return
	}
	v2, unsupported := negotiate(r)
	if unsupported != "" {
		h.refuse(w, http.StatusUnsupportedMediaType, "bad_body", unsupported)
		return
	}
	if r.ContentLength > h.MaxBodyBytes {
		h.refuse(w, http.StatusRequestEntityTooLarge, "request_limit", fmt.Sprintf("body over %d bytes: Content-Length %d", h.MaxBodyBytes, r.ContentLength))
		return
	}
	// Bodies are read before the write gate (so its slots wait on no
	// client), and under memory pressure not at all.
	if err := h.opts.Gate.CheckMemory(); err != nil {
		h.opts.Metrics.Reject("remote_write", reason(err))
		httpError(w, err)
		return
	}
	// The compressed body is only read by snappy: its buffer is pooled,
	// so a request does not grow a fresh one by doubling.
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 16<<20 {
			buf.Reset()
			bodyPool.Put(buf)
		}
	}()
	rc := http.NewResponseController(w)
	deadline := h.BodyTimeout > 0 && rc.SetReadDeadline(time.Now().Add(h.BodyTimeout)) == nil
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.MaxBodyBytes))
	body := buf.Bytes()
	if err == nil && deadline {
		rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		// The deadline stays: the server would otherwise wait for the
		// rest of a declared body before it answers. The connection
		// cannot carry another request.
		w.Header().Set("Connection", "close")
		var tooBig *http.MaxBytesError
		var netErr net.Error
		switch {
		case errors.As(err, &tooBig):
			h.refuse(w, http.StatusRequestEntityTooLarge, "request_limit", fmt.Sprintf("body over %d bytes", h.MaxBodyBytes))
		case errors.As(err, &netErr) && netErr.Timeout():
			h.refuse(w, http.StatusRequestTimeout, "bad_body", fmt.Sprintf("body not received within %v (%d bytes came)", h.BodyTimeout, len(body)))
		default:
			h.refuse(w, http.StatusBadRequest, "bad_body", "read body: "+err.Error())
		}
		return
	}
	if err := h.opts.enter(r.Context()); err != nil {
		h.opts.Metrics.Reject("remote_write", reason(err))
		httpError(w, err)
		return
	}
	defer h.opts.Gate.Leave()
	n, err := snappy.DecodedLen(body)
	if err != nil {
		h.refuse(w, http.StatusBadRequest, "bad_body", "snappy: "+err.Error())
		return
	}
	if n > h.MaxDecodedBytes {
		h.refuse(w, http.StatusRequestEntityTooLarge, "request_limit", fmt.Sprintf("body decodes to %d bytes, the limit is %d", n, h.MaxDecodedBytes))
		return
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		h.refuse(w, http.StatusBadRequest, "bad_body", "snappy: "+err.Error())
		return
	}
	if v2 {
		h.serveV2(w, raw)
		return
	}
	// raw is snappy's fresh buffer, never reused: the decoded label
	// strings may share its memory.
	fb := getFlat()
	defer fb.release()
	fb.cache = h.db.cache
	if err := decodeWrite(raw, promSchema, fb); err != nil {
		h.refuse(w, http.StatusBadRequest, "bad_body", err.Error())
		return
	}
	if _, err := write(h.db, &h.opts, "remote_write", fb); err != nil {
		httpError(w, err)
		return
	}
	keepMetadata(h.db.db, fb.meta)
	keepExemplars(h.db.db, func(i int) series.Labels { return fb.Labels(i, nil) }, fb.exemplars, fb.exLabels)
	w.WriteHeader(http.StatusNoContent)
}

// serveV2 stores a remote-write 2.0 request: its float samples, native
// histograms, metadata and exemplars, answering with the counts the
// specification asks for. The samples and histograms are stored whole or
// not at all.
func (h *RemoteWrite) serveV2(w http.ResponseWriter, raw []byte) {
	b := v2Pool.Get().(*v2Batch)
	defer b.release()
	if err := decodeV2(raw, b); err != nil {
		writtenHeaders(w, 0, 0, 0)
		h.refuse(w, http.StatusBadRequest, "bad_body", err.Error())
		return
	}
	n := 0
	if len(b.series) > 0 {
		var err error
		if n, err = write(h.db, &h.opts, "remote_write", b); err != nil {
			writtenHeaders(w, 0, 0, 0)
			httpError(w, err)
			return
		}
	}
	keepMetadata(h.db.db, b.meta)
	ex := keepExemplars(h.db.db, func(i int) series.Labels { return b.Labels(i, nil) }, b.exemplars, b.exLabels)
	writtenHeaders(w, n-len(b.hists), len(b.hists), ex)
	w.WriteHeader(http.StatusNoContent)
}
