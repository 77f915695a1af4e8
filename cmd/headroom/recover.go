package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// panicGuard turns a panic in one request's handler into that request's
// failure. gRPC does not recover handlers' panics: without it one bad
// query ends the server and every acknowledged write waiting in its
// head. net/http recovers, but answers by closing the connection, which a
// client sees as EOF and may retry forever.
type panicGuard struct {
	log   *slog.Logger
	count *prometheus.CounterVec
}

func newPanicGuard(log *slog.Logger, reg prometheus.Registerer) *panicGuard {
	g := &panicGuard{log: log, count: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "headroom_panics_recovered_total",
		Help: "Requests whose handler panicked and were answered with an internal error (a bug: the log has the stack).",
	}, []string{"protocol"})}
	reg.MustRegister(g.count)
	return g
}

func (g *panicGuard) report(protocol, what string, r any) {
	g.count.WithLabelValues(protocol).Inc()
	g.log.Error("request handler panicked; answered with an internal error",
		"protocol", protocol, "request", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
}

func (g *panicGuard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			g.report("grpc", info.FullMethod, r)
			resp, err = nil, status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
		}
	}()
	return h(ctx, req)
}

func (g *panicGuard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			g.report("grpc", info.FullMethod, r)
			err = status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
		}
	}()
	return h(srv, ss)
}

// http answers a panicking handler's request with 500, if nothing was
// written yet, in the Prometheus API's error shape.
func (g *panicGuard) http(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &wroteHeader{ResponseWriter: w}
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if err, ok := rec.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(rec) // the handler's own way to abort a response
			}
			g.report("http", r.Method+" "+r.URL.Path, rec)
			if tw.wrote {
				panic(http.ErrAbortHandler) // half an answer: the client must see it cut
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, `{"status":"error","errorType":"internal","error":%q}`+"\n", fmt.Sprintf("internal error: %v", rec))
		}()
		next.ServeHTTP(tw, r)
	})
}

// wroteHeader notes whether the response has started.
type wroteHeader struct {
	http.ResponseWriter
	wrote bool
}

func (w *wroteHeader) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *wroteHeader) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (deadlines,
// flushes) through the wrapper.
func (w *wroteHeader) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *wroteHeader) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.wrote = true
		f.Flush()
	}
}
