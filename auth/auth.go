// Package auth owns the server's bearer tokens: reading the tokens file,
// checking a presented token in constant time, and the gRPC interceptors
// and HTTP middleware that guard each endpoint with the scope it needs
// (read for queries, write for ingestion).
//
// It must not know what the endpoints do: callers say which scope a
// method or handler needs. Tokens are kept only as SHA-256 digests, so a
// memory dump or a log line never holds one.
package auth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Scope is what a token may do.
type Scope uint8

const (
	Read  Scope = 1 << iota // queries, series and label lookups
	Write                   // ingestion
)

func (s Scope) String() string {
	switch s {
	case Read:
		return "read"
	case Write:
		return "write"
	case Read | Write:
		return "read,write"
	}
	return "none"
}

// Errors of Check; the middleware maps them to Unauthenticated/401 and
// PermissionDenied/403.
var (
	ErrNoToken      = errors.New("no bearer token")
	ErrUnknownToken = errors.New("unknown token")
	ErrScope        = errors.New("token lacks the scope")
)

type entry struct {
	digest [sha256.Size]byte
	scope  Scope
	name   string
}

// Tokens is a set of tokens and their scopes. A nil *Tokens allows
// everything: authentication is off. Replace swaps the whole set while
// requests are checked, so that tokens rotate without a restart.
type Tokens struct{ set atomic.Pointer[[]entry] }

func (t *Tokens) entries() []entry {
	if p := t.set.Load(); p != nil {
		return *p
	}
	return nil
}

// Replace makes o's tokens the only valid ones, at once for every
// request checked after it returns.
func (t *Tokens) Replace(o *Tokens) {
	e := o.entries()
	t.set.Store(&e)
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.entries()) }

// Load reads a tokens file: one token a line, "SCOPES TOKEN [NAME]",
// where SCOPES is read, write or read,write; blank lines and lines
// starting with # are ignored. Errors name the line.
func Load(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t := &Tokens{}
	seen := map[string]int{} // token -> its line
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) < 2 || len(fields) > 3 {
			return nil, fmt.Errorf("%s:%d: want \"SCOPES TOKEN [NAME]\", got %d fields", path, line, len(fields))
		}
		var scope Scope
		for _, s := range strings.Split(fields[0], ",") {
			switch s {
			case "read":
				scope |= Read
			case "write":
				scope |= Write
			default:
				return nil, fmt.Errorf("%s:%d: unknown scope %q (want read, write or read,write)", path, line, s)
			}
		}
		if len(fields[1]) < 16 {
			return nil, fmt.Errorf("%s:%d: token of %d characters: use at least 16 (for example: openssl rand -hex 24)", path, line, len(fields[1]))
		}
		// A token twice has one scope too many: which one was meant is
		// the operator's to say, not the last line's.
		if first, ok := seen[fields[1]]; ok {
			return nil, fmt.Errorf("%s:%d: the token of line %d again: list each token once, with all its scopes (read,write)", path, line, first)
		}
		seen[fields[1]] = line
		name := fmt.Sprintf("line %d", line)
		if len(fields) == 3 {
			name = fields[2]
		}
		t.Add(fields[1], scope, name)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if t.Len() == 0 {
		return nil, fmt.Errorf("%s: no tokens: an empty tokens file would lock every client out", path)
	}
	return t, nil
}

// Add adds a token.
func (t *Tokens) Add(token string, scope Scope, name string) {
	e := append(slices.Clone(t.entries()), entry{digest: sha256.Sum256([]byte(token)), scope: scope, name: name})
	t.set.Store(&e)
}

// Check returns the name of the token if it grants need. Every entry is
// compared, in constant time, so the time taken tells nothing of which
// token came close.
func (t *Tokens) Check(token string, need Scope) (string, error) {
	if t == nil {
		return "", nil
	}
	if token == "" {
		return "", ErrNoToken
	}
	d := sha256.Sum256([]byte(token))
	entries := t.entries()
	found := -1
	for i := range entries {
		if subtle.ConstantTimeCompare(d[:], entries[i].digest[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", ErrUnknownToken
	}
	e := entries[found]
	if e.scope&need != need {
		return e.name, fmt.Errorf("%w %s (token %q has %s)", ErrScope, need, e.name, e.scope)
	}
	return e.name, nil
}

// FromHeader extracts a token from an Authorization header value:
// "Bearer TOKEN", or HTTP Basic with the token as the password (for
// clients that can only do Basic, such as some Grafana setups).
func FromHeader(h string) string {
	if v, ok := cutPrefixFold(h, "Bearer "); ok {
		return strings.TrimSpace(v)
	}
	if v, ok := cutPrefixFold(h, "Basic "); ok {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil {
			return ""
		}
		if _, pw, ok := strings.Cut(string(raw), ":"); ok {
			return pw
		}
	}
	return ""
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

// HTTP guards h: without a valid token granting need it answers 401 (with
// WWW-Authenticate) or 403. denied, if set, is told of each refusal.
func (t *Tokens) HTTP(need Scope, denied func(reason string), h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := FromHeader(r.Header.Get("Authorization"))
		if token == "" && need == Read {
			// The web console's session (LoginHandler). Reads only: a
			// cookie goes along with any request the browser makes, so a
			// page elsewhere could make it write.
			if c, err := r.Cookie(SessionCookie); err == nil {
				token = c.Value
			}
		}
		_, err := t.Check(token, need)
		if err == nil {
			h.ServeHTTP(w, r)
			return
		}
		if denied != nil {
			denied(reasonOf(err))
		}
		if errors.Is(err, ErrScope) {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="headroom"`)
		http.Error(w, err.Error()+": send Authorization: Bearer <token>", http.StatusUnauthorized)
	})
}

func reasonOf(err error) string {
	if errors.Is(err, ErrScope) {
		return "forbidden"
	}
	return "unauthenticated"
}

// MethodScopes says which scope each gRPC method needs, by full method
// name prefix ("/headroom.v1.Ingest/"); a method matching no prefix needs
// Read.
type MethodScopes map[string]Scope

func (m MethodScopes) need(method string) Scope {
	for prefix, s := range m {
		if strings.HasPrefix(method, prefix) {
			return s
		}
	}
	return Read
}

func (t *Tokens) checkContext(ctx context.Context, need Scope) error {
	md, _ := metadata.FromIncomingContext(ctx)
	var tok string
	if v := md.Get("authorization"); len(v) > 0 {
		tok = FromHeader(v[0])
	}
	_, err := t.Check(tok, need)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrScope):
		return status.Error(codes.PermissionDenied, err.Error())
	default:
		return status.Error(codes.Unauthenticated, err.Error()+": send metadata authorization: Bearer <token>")
	}
}

// GRPC returns interceptors that guard every method with its scope. Public
// methods (health checks) are listed in open. denied, if set, is told of
// each refusal with the method's name.
func (t *Tokens) GRPC(scopes MethodScopes, open []string, denied func(method, reason string)) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	isOpen := func(m string) bool {
		for _, p := range open {
			if strings.HasPrefix(m, p) {
				return true
			}
		}
		return false
	}
	check := func(ctx context.Context, method string) error {
		if t == nil || isOpen(method) {
			return nil
		}
		err := t.checkContext(ctx, scopes.need(method))
		if err != nil && denied != nil {
			reason := "unauthenticated"
			if status.Code(err) == codes.PermissionDenied {
				reason = "forbidden"
			}
			denied(method, reason)
		}
		return err
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
	return unary, stream
}

// Credentials are a client's bearer token as gRPC per-RPC credentials.
type Credentials struct {
	Token string
	// Insecure allows sending the token without TLS (loopback tests, a
	// trusted network); gRPC refuses otherwise.
	Insecure bool
}

func (c Credentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + c.Token}, nil
}

func (c Credentials) RequireTransportSecurity() bool { return !c.Insecure }

// SessionCookie holds a read token for the web console, which a browser
// sends with the page's API requests (it cannot add a header to them
// all).
const SessionCookie = "headroom_session"

// LoginHandler is the console's sign-in: POST token=... with a token of
// the read scope sets it as an HttpOnly, SameSite=Strict session cookie
// (Secure over TLS); a wrong or write-only token is refused, saying which.
// Without tokens it answers 204: there is nothing to sign in to.
func (t *Tokens) LoginHandler(tls bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "method not allowed: POST token=...", http.StatusMethodNotAllowed)
			return
		}
		if t == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		token := strings.TrimSpace(r.PostFormValue("token"))
		if _, err := t.Check(token, Read); err != nil {
			if errors.Is(err, ErrScope) {
				http.Error(w, "this token may not read", http.StatusForbidden)
				return
			}
			http.Error(w, "unknown token", http.StatusUnauthorized)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: token, Path: "/", HttpOnly: true, Secure: tls, SameSite: http.SameSiteStrictMode})
		w.WriteHeader(http.StatusNoContent)
	})
}
