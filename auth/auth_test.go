package auth_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/headroomdb/headroom/auth"
)

const (
	readTok  = "r-0123456789abcdef"
	writeTok = "w-0123456789abcdef"
	bothTok  = "b-0123456789abcdef"
)

func load(t *testing.T, text string) (*auth.Tokens, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return auth.Load(p)
}

func tokens(t *testing.T) *auth.Tokens {
	toks, err := load(t, "# comment\nread "+readTok+" grafana\n\nwrite "+writeTok+" agent\nread,write "+bothTok+"\n")
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

func TestLoadErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"admin " + readTok + "\n", `:1: unknown scope "admin"`},
		{"\nread short\n", ":2: token of 5 characters"},
		{"read\n", ":1: want"},
		{"# nothing\n", "no tokens"},
		{"read " + readTok + " ci\nwrite " + readTok + "\n", ":2: the token of line 1 again"},
	} {
		if _, err := load(t, c.text); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%q) = %v, want an error containing %q", c.text, err, c.want)
		}
	}
}

func TestCheck(t *testing.T) {
	toks := tokens(t)
	for _, c := range []struct {
		tok  string
		need auth.Scope
		err  error
	}{
		{readTok, auth.Read, nil},
		{readTok, auth.Write, auth.ErrScope},
		{writeTok, auth.Write, nil},
		{writeTok, auth.Read, auth.ErrScope},
		{bothTok, auth.Read | auth.Write, nil},
		{"", auth.Read, auth.ErrNoToken},
		{readTok + "x", auth.Read, auth.ErrUnknownToken},
	} {
		_, err := toks.Check(c.tok, c.need)
		if (c.err == nil) != (err == nil) || (c.err != nil && !strings.Contains(err.Error(), c.err.Error())) {
			t.Errorf("Check(%q, %s) = %v, want %v", c.tok, c.need, err, c.err)
		}
	}
	var off *auth.Tokens
	if _, err := off.Check("", auth.Write); err != nil {
		t.Errorf("nil Tokens must allow everything: %v", err)
	}
}

func TestHTTP(t *testing.T) {
	var denied []string
	h := tokens(t).HTTP(auth.Write, func(r string) { denied = append(denied, r) }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	do := func(set func(*http.Request)) int {
		req, _ := http.NewRequest("POST", srv.URL, nil)
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		name string
		set  func(*http.Request)
		want int
	}{
		{"none", func(r *http.Request) {}, 401},
		{"wrong", func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope-nope-nope-nope") }, 401},
		{"read-only", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+readTok) }, 403},
		{"write", func(r *http.Request) { r.Header.Set("Authorization", "bearer "+writeTok) }, 204},
		{"basic", func(r *http.Request) { r.SetBasicAuth("anyone", bothTok) }, 204},
	} {
		if got := do(c.set); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
	}
	if strings.Join(denied, ",") != "unauthenticated,unauthenticated,forbidden" {
		t.Errorf("denied callbacks %v", denied)
	}
}

func TestGRPC(t *testing.T) {
	unary, stream := tokens(t).GRPC(auth.MethodScopes{"/grpc.health.v1.Health/Watch": auth.Write}, []string{"/grpc.health.v1.Health/Check"}, nil)
	srv := grpc.NewServer(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	dial := func(opts ...grpc.DialOption) healthpb.HealthClient {
		conn, err := grpc.NewClient(lis.Addr().String(), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
	ctx := context.Background()
	anon := dial()
	if _, err := anon.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("open method refused: %v", err)
	}
	watch := func(c healthpb.HealthClient) codes.Code {
		s, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		return status.Code(err)
	}
	if got := watch(anon); got != codes.Unauthenticated {
		t.Errorf("stream without token: %v, want Unauthenticated", got)
	}
	if got := watch(dial(grpc.WithPerRPCCredentials(auth.Credentials{Token: readTok, Insecure: true}))); got != codes.PermissionDenied {
		t.Errorf("stream with a read token: %v, want PermissionDenied", got)
	}
	if got := watch(dial(grpc.WithPerRPCCredentials(auth.Credentials{Token: writeTok, Insecure: true}))); got != codes.OK {
		t.Errorf("stream with a write token: %v, want OK", got)
	}
}

// TestReplace: a replaced set is in force at once, and checks running
// while it is replaced see the old set or the new one (the race detector
// watches the swap).
func TestReplace(t *testing.T) {
	t1, t2 := &auth.Tokens{}, &auth.Tokens{}
	t1.Add("first-token-0123456789", auth.Read, "first")
	t2.Add("second-token-0123456789", auth.Read|auth.Write, "second")
	live := &auth.Tokens{}
	live.Replace(t1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000; i++ {
			if name, err := live.Check("first-token-0123456789", auth.Read); err != nil && !errors.Is(err, auth.ErrUnknownToken) || err == nil && name != "first" {
				t.Errorf("check %d while replacing: %q %v", i, name, err)
				return
			}
		}
	}()
	for i := 0; i < 100; i++ {
		live.Replace(t2)
		live.Replace(t1)
	}
	<-done
	live.Replace(t2)
	if _, err := live.Check("first-token-0123456789", auth.Read); !errors.Is(err, auth.ErrUnknownToken) {
		t.Errorf("a replaced token: %v", err)
	}
	if name, err := live.Check("second-token-0123456789", auth.Write); err != nil || name != "second" {
		t.Errorf("the new token: %q %v", name, err)
	}
	if live.Len() != 1 {
		t.Errorf("Len = %d", live.Len())
	}
}
