package main

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWriteCommand(t *testing.T) {
	ts := startServer(t)
	now := time.Now().Add(-time.Hour).Truncate(time.Minute)
	var csv strings.Builder
	csv.WriteString("metric,host,timestamp,value\n")
	for i := 0; i < 250; i++ {
		ts := now.Add(time.Duration(i) * 10 * time.Second)
		csv.WriteString("cpu,a," + ts.Format("2006-01-02 15:04:05") + ",1.5\n")
		csv.WriteString("cpu,b," + ts.Format(time.RFC3339) + ",\n") // a gap
	}
	csvPath := writeFile(t, "hosts.csv", csv.String())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("# TYPE up gauge\nup{job=\"x\"} 1 " + itoa(now.UnixMilli()) + "\nup{job=\"y\"} 0 " + itoa(now.UnixMilli()) + "\n"))
	zw.Close()
	promPath := writeFile(t, "scrape.prom.gz", gz.String())

	if err := runWrite([]string{"--server", ts.grpcAddr, "--batch-samples", "100", "--quiet", "--label", "dc=eu", csvPath, promPath}); err != nil {
		t.Fatal(err)
	}
	got := stored(t, ts.db)
	if n := len(got[`{__name__="cpu", dc="eu", host="a"}`]); n != 250 {
		t.Errorf("cpu{host=a}: %d samples, want 250", n)
	}
	if _, ok := got[`{__name__="cpu", dc="eu", host="b"}`]; ok {
		t.Errorf("the empty values of host b were stored")
	}
	if len(got[`{__name__="up", dc="eu", job="y"}`]) != 1 {
		t.Errorf("the gzipped exposition file was not stored: %v", got)
	}

	// Refusals name the line: by the parser, and by the server.
	bad := writeFile(t, "bad.csv", "metric,timestamp,value\nm,"+now.Format(time.RFC3339)+",1\nm,NaN,2\n")
	if err := runWrite([]string{"--server", ts.grpcAddr, "--quiet", bad}); err == nil || !strings.Contains(err.Error(), "bad.csv: line 3") || !strings.Contains(err.Error(), `"NaN" is not a time`) {
		t.Errorf("NaN timestamp: %v, want an error naming line 3", err)
	}
	old := writeFile(t, "old.csv", "metric,timestamp,value\nm,2001-01-01T00:00:00Z,1\n")
	if err := runWrite([]string{"--server", ts.grpcAddr, "--quiet", old}); err == nil || !strings.Contains(err.Error(), "old.csv: line 2") || !strings.Contains(err.Error(), "retention") {
		t.Errorf("sample out of retention: %v, want an error naming line 2 and the retention", err)
	}
	if err := runWrite([]string{"--server", ts.grpcAddr, "--quiet", writeFile(t, "x.csv", "when,value\n")}); err == nil || !strings.Contains(err.Error(), "line 1: no timestamp column") {
		t.Errorf("no time column: %v", err)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "headroom-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath = writeFile(t, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyPath = writeFile(t, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
	return
}

func TestServeTLS(t *testing.T) {
	cert, key := selfSigned(t)
	ts := startServer(t, "--tls-cert", cert, "--tls-key", key)
	csv := writeFile(t, "a.csv", "metric,timestamp,value\nm,"+time.Now().Format(time.RFC3339)+",1\n")
	if err := runWrite([]string{"--server", ts.grpcAddr, "--tls-ca", cert, "--quiet", "--timeout", "5s", csv}); err != nil {
		t.Fatalf("write over TLS: %v", err)
	}
	if err := runWrite([]string{"--server", ts.grpcAddr, "--quiet", "--timeout", "2s", csv}); err == nil {
		t.Error("a plaintext client wrote to a TLS server")
	}
	pool := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(pemBytes)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://" + ts.httpLis.Addr().String() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTPS /healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := stored(t, ts.db); len(got) != 1 {
		t.Errorf("stored %v", got)
	}
}
