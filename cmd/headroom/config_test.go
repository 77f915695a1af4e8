package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "headroom.yaml")
	os.WriteFile(path, []byte("data-dir: /var/lib/headroom\nretention: 90d\nhttp-port: 9191\nmax-active-series: 5000\notlp-promote-resource-attributes: [k8s.pod.name, cloud.region]\n"), 0o644)
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := serveFlags(fs)
	if err := fs.Parse([]string{"--config", path, "--http-port", "9292"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, path); err != nil {
		t.Fatal(err)
	}
	if cfg.dataDir != "/var/lib/headroom" || cfg.retention != 90*24*time.Hour || cfg.maxActive != 5000 || cfg.promote != "k8s.pod.name,cloud.region" {
		t.Errorf("config not applied: %+v", cfg)
	}
	if cfg.httpPort != 9292 {
		t.Errorf("http-port = %d: the command line must win over the file", cfg.httpPort)
	}
	for _, c := range []struct{ text, want string }{
		{"data_dir: x\n", `unknown option "data_dir"`},
		{"retention: forever\n", `option "retention": duration "forever"`},
		{"grpc-port: [1\n", "yaml"},
	} {
		os.WriteFile(path, []byte(c.text), 0o644)
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		serveFlags(fs)
		if err := applyConfigFile(fs, path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config %q: %v, want %q", c.text, err, c.want)
		}
	}
}

func TestServeFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", "a.pem"}, "go together"},
		{[]string{"--grpc-port", "70000"}, "--grpc-port 70000"},
		{[]string{"--max-active-series", "0"}, "-1 for no limit"},
		{[]string{"--tokens-file", "/nonexistent/tokens"}, "--tokens-file"},
		{[]string{"--min-free-disk", "8MiB"}, "--min-free-disk 8MiB: Pebble preallocates"},
		{[]string{"--body-timeout", "0s"}, "--body-timeout 0s"},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		cfg := serveFlags(fs)
		if err := fs.Parse(append([]string{"--data-dir", t.TempDir()}, c.args...)); err != nil {
			t.Fatal(err)
		}
		if _, err := newServer(cfg, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"15d": 15 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1y": 365 * 24 * time.Hour, "90m": 90 * time.Minute, "1.5d": 36 * time.Hour} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "-1d", "5x"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) succeeded", in)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "512MiB": 512 << 20, "2GiB": 2 << 30, "1.5GB": 1_500_000_000, "64KiB": 64 << 10, "1TiB": 1 << 40, "100 MB": 100_000_000, "7B": 7,
	} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "lots", "1PiB", "5 GiBs", "1e30GiB", "NaN"} {
		if _, err := parseBytes(in); err == nil || !strings.Contains(err.Error(), "512MiB") {
			t.Errorf("parseBytes(%q): %v, want an error with an example", in, err)
		}
	}
	for n, want := range map[int64]string{256 << 20: "256MiB", 3 << 30: "3GiB", 1000: "1000", 1536 << 10: "1536KiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
