package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestPanicGuardGRPC: a handler that panics answers Internal, the server
// goes on serving, and the panic is counted and logged with its stack.
func TestPanicGuardGRPC(t *testing.T) {
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	g := newPanicGuard(slog.New(slog.NewTextHandler(&logs, nil)), reg)
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(g.unary), grpc.ChainStreamInterceptor(g.stream))
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Panics",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Panics/Unary"}, func(context.Context, any) (any, error) {
				var m map[string]int
				m["x"] = 1 // a nil map write, like any bug
				return nil, nil
			})
		}}},
		Streams: []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true, Handler: func(srv any, ss grpc.ServerStream) error {
			panic("stream bug")
		}}},
	}, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	defer s.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 2; i++ { // the second call proves the server lived
		err := conn.Invoke(ctx, "/test.Panics/Unary", &emptypb.Empty{}, &emptypb.Empty{})
		if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "nil map") {
			t.Fatalf("call %d: %v, want Internal naming the panic", i, err)
		}
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/test.Panics/Stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(&emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	st.CloseSend()
	if err := st.RecvMsg(&emptypb.Empty{}); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "stream bug") {
		t.Fatalf("stream: %v, want Internal", err)
	}
	if n := counted(g, "grpc"); n != 3 {
		t.Errorf("panics counted: %v, want 3", n)
	}
	if !strings.Contains(logs.String(), "recover_test.go") {
		t.Errorf("the log has no stack of the panic:\n%s", logs.String())
	}
}

// TestPanicGuardHTTP: a panic before the answer starts is a 500 in the
// API's error shape; after it started, the client sees the answer cut.
func TestPanicGuardHTTP(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := newPanicGuard(slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	mux := http.NewServeMux()
	mux.HandleFunc("/early", func(http.ResponseWriter, *http.Request) { panic("early bug") })
	mux.HandleFunc("/late", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(strings.Repeat("x", 1<<20)))
		panic("late bug")
	})
	ts := httptest.NewServer(g.http(mux))
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/early")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(body), `"errorType":"internal"`) || !strings.Contains(string(body), "early bug") {
		t.Fatalf("early panic: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(ts.URL + "/late")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a response cut by a panic read as complete")
	}
	if n := counted(g, "http"); n != 2 {
		t.Errorf("panics counted: %v, want 2", n)
	}
}

func counted(g *panicGuard, protocol string) float64 {
	var m dto.Metric
	if err := g.count.WithLabelValues(protocol).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
