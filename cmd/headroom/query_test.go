package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

// TestQueryCommand runs `headroom query` against a server over gRPC: the
// Query service streams the result and the command prints it.
func TestQueryCommand(t *testing.T) {
	ts := startServer(t)
	now := time.Now().Truncate(time.Minute)
	req := &headroomv1.WriteRequest{}
	for _, host := range []string{"a", "b"} {
		s := &headroomv1.Series{Labels: []*headroomv1.Label{{Name: "__name__", Value: "cpu"}, {Name: "host", Value: host}}}
		for i := 0; i < 10; i++ {
			v := float64(i)
			if host == "b" {
				v *= 10
			}
			s.Samples = append(s.Samples, &headroomv1.Sample{TimestampMs: now.Add(time.Duration(i-10) * time.Minute).UnixMilli(), Value: v})
		}
		req.Series = append(req.Series, s)
	}
	if _, err := headroomv1.NewIngestClient(ts.dial(t)).Write(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := runQuery(append([]string{"--server", ts.grpcAddr}, args...), &out)
		return out.String(), err
	}
	at := fmt.Sprint(now.Add(-time.Minute).Unix())
	out, err := run("max by (host) (max_over_time(cpu[10m]))", "--time", at)
	if err != nil {
		t.Fatal(err)
	}
	if want := "SERIES      VALUE\n{host=\"a\"}  9\n{host=\"b\"}  90\n"; out != want {
		t.Errorf("instant table:\n%s\nwant\n%s", out, want)
	}
	// Flags after the expression; a range in the past, every 3 minutes.
	out, err = run(`cpu{host="a"}`, "--start", now.Add(-10*time.Minute).Format(time.RFC3339), "--end", now.Add(-time.Minute).Format(time.RFC3339), "--step", "3m", "--format", "csv")
	if err != nil {
		t.Fatal(err)
	}
	want := "series,timestamp,value\n"
	for i := 0; i < 10; i += 3 {
		want += fmt.Sprintf("\"cpu{host=\"\"a\"\"}\",%s,%d\n", now.Add(time.Duration(i-10)*time.Minute).UTC().Format(time.RFC3339), i)
	}
	if out != want {
		t.Errorf("range csv:\n%s\nwant\n%s", out, want)
	}
	out, err = run("sum(cpu)", "--time", at, "--format", "json")
	var j struct {
		ResultType string
		Series     []struct {
			Labels map[string]string
			Points []struct{ Time, Value string }
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &j) != nil || j.ResultType != "vector" || len(j.Series) != 1 || j.Series[0].Points[0].Value != "99" {
		t.Errorf("json: %v %s", err, out)
	}
	if _, err := run("sum(cpu"); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Errorf("bad expression: %v", err)
	}
	// The answer's warnings, in the stream's first message.
	qs, err := headroomv1.NewQueryClient(ts.dial(t)).InstantQuery(context.Background(), &headroomv1.InstantQueryRequest{Query: "quantile(2, cpu)", TimeMs: now.UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := qs.Recv()
	if err != nil || len(first.GetWarnings()) != 1 || !strings.Contains(first.GetWarnings()[0], "quantile value should be between 0 and 1, got 2") {
		t.Errorf("gRPC warnings: %q %v", first.GetWarnings(), err)
	}
	// Straight from a gRPC client: the stream says the type, then series.
	stream, err := headroomv1.NewQueryClient(ts.dial(t)).RangeQuery(context.Background(), &headroomv1.RangeQueryRequest{Query: "cpu", StartMs: 0, EndMs: 1, StepMs: 0})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "step") {
		t.Errorf("zero step over gRPC: %v", err)
	}
}

func TestParseCLITime(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"now":                  now,
		"-6h":                  now.Add(-6 * time.Hour),
		"now-2d":               now.Add(-48 * time.Hour),
		"2026-01-01T00:00:00Z": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		"1700000000.5":         time.UnixMilli(1700000000500),
	} {
		got, err := parseCLITime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseCLITime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseCLITime("yesterday", now); err == nil {
		t.Error("parseCLITime accepted yesterday")
	}
}
