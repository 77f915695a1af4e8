package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

func runQuery(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("query", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	start := fs.String("start", "", "range query start: now, a relative time (-6h, -2d), RFC 3339 or Unix seconds; empty: an instant query")
	end := fs.String("end", "now", "range query end, as --start")
	step := fs.String("step", "", "range query step (1m, 30s); default: about 250 points between --start and --end")
	at := fs.String("time", "now", "instant query time, as --start")
	format := fs.String("format", "table", "table, csv or json")
	tier := fs.String("tier", "auto", "data tier: auto (rollups where they answer as raw data would), raw, or a rollup tier (5m, 1h, 1d)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: headroom query [flags] 'PROMQL'

Evaluates a PromQL expression on a server over gRPC and prints the result:
an instant query at --time, or a range query from --start to --end every
--step. Times: now, relative (-6h, -30m, -7d), RFC 3339 or Unix seconds.

Flags:
`)
		fs.PrintDefaults()
	}
	// Flags may follow the expression, as in `headroom query 'up' --start -1h`.
	var expr string
	rest := args
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		if expr != "" {
			return fmt.Errorf("one expression, please: got %q and %q", expr, fs.Arg(0))
		}
		expr, rest = fs.Arg(0), fs.Args()[1:]
	}
	if strings.TrimSpace(expr) == "" {
		fs.Usage()
		return errors.New("no PromQL expression given")
	}
	switch *format {
	case "table", "csv", "json":
	default:
		return fmt.Errorf("--format %q: want table, csv or json", *format)
	}
	now := time.Now()
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := headroomv1.NewQueryClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var stream interface {
		Recv() (*headroomv1.QueryResponse, error)
	}
	if *start == "" {
		t, err := parseCLITime(*at, now)
		if err != nil {
			return fmt.Errorf("--time: %w", err)
		}
		stream, err = client.InstantQuery(ctx, &headroomv1.InstantQueryRequest{Query: expr, TimeMs: t.UnixMilli(), Tier: *tier})
		if err != nil {
			return err
		}
	} else {
		s, err := parseCLITime(*start, now)
		if err != nil {
			return fmt.Errorf("--start: %w", err)
		}
		e, err := parseCLITime(*end, now)
		if err != nil {
			return fmt.Errorf("--end: %w", err)
		}
		st := e.Sub(s) / 250
		if *step != "" {
			if st, err = parseDuration(*step); err != nil {
				return fmt.Errorf("--step: %w", err)
			}
		}
		st = max(st.Round(time.Second), time.Second)
		stream, err = client.RangeQuery(ctx, &headroomv1.RangeQueryRequest{Query: expr, StartMs: s.UnixMilli(), EndMs: e.UnixMilli(), StepMs: st.Milliseconds(), Tier: *tier})
		if err != nil {
			return err
		}
	}
	var typ string
	var res []*headroomv1.ResultSeries
	var scalar *headroomv1.QueryResponse
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			st := status.Convert(err)
			return fmt.Errorf("%s: %s", st.Code(), st.Message())
		}
		if msg.ResultType != "" {
			typ = msg.ResultType
		}
		// On standard error, so that the answer on standard output stays
		// what --format says.
		for _, w := range msg.Warnings {
			fmt.Fprintln(os.Stderr, "warning:", w)
		}
		for _, i := range msg.Infos {
			fmt.Fprintln(os.Stderr, "info:", i)
		}
		res = append(res, msg.Series...)
		if msg.Scalar != nil {
			scalar = msg
		}
	}
	return printResult(out, *format, typ, res, scalar)
}

// parseCLITime reads now, -6h (relative to now), RFC 3339 or Unix seconds.
func parseCLITime(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-") || strings.HasPrefix(s, "now-"):
		d, err := parseDuration(strings.TrimPrefix(strings.TrimPrefix(s, "now"), "-"))
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(-d), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.UnixMilli(int64(f * 1000)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want now, -6h, RFC 3339 or Unix seconds", s)
	}
	return t, nil
}

func labelString(ls []*headroomv1.Label) string {
	var name string
	var parts []string
	for _, l := range ls {
		if l.Name == "__name__" {
			name = l.Value
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%q", l.Name, l.Value))
	}
	if len(parts) == 0 && name != "" {
		return name
	}
	return name + "{" + strings.Join(parts, ", ") + "}"
}

func fmtValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// cliPoint is a value of a result as the CLI prints it: a number, or a
// native histogram as its count, sum and the buckets that hold something.
type cliPoint struct {
	t int64
	v string
}

// cliPoints lists a series' samples and histograms in time order.
func cliPoints(s *headroomv1.ResultSeries) []cliPoint {
	out := make([]cliPoint, 0, len(s.Samples)+len(s.Histograms))
	for _, p := range s.Samples {
		out = append(out, cliPoint{p.TimestampMs, fmtValue(p.Value)})
	}
	for _, h := range s.Histograms {
		var b strings.Builder
		fmt.Fprintf(&b, "{count:%s sum:%s", fmtValue(h.Count), fmtValue(h.Sum))
		for _, bk := range h.Buckets {
			lo, hi := "(", "]"
			switch bk.Boundaries {
			case 1:
				lo, hi = "[", ")"
			case 2:
				lo, hi = "(", ")"
			case 3:
				lo, hi = "[", "]"
			}
			fmt.Fprintf(&b, " %s%s,%s%s:%s", lo, fmtValue(bk.Lower), fmtValue(bk.Upper), hi, fmtValue(bk.Count))
		}
		b.WriteString("}")
		out = append(out, cliPoint{h.TimestampMs, b.String()})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].t < out[j].t })
	return out
}

func printResult(w io.Writer, format, typ string, res []*headroomv1.ResultSeries, scalar *headroomv1.QueryResponse) error {
	ts := func(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }
	switch format {
	case "json":
		type point struct {
			Time  string `json:"time"`
			Value string `json:"value"`
		}
		type ser struct {
			Labels map[string]string `json:"labels"`
			Points []point           `json:"points"`
		}
		out := struct {
			ResultType string `json:"resultType"`
			Series     []ser  `json:"series,omitempty"`
			Scalar     *point `json:"scalar,omitempty"`
			String     string `json:"string,omitempty"`
		}{ResultType: typ}
		for _, s := range res {
			x := ser{Labels: map[string]string{}}
			for _, l := range s.Labels {
				x.Labels[l.Name] = l.Value
			}
			for _, p := range cliPoints(s) {
				x.Points = append(x.Points, point{ts(p.t), p.v})
			}
			out.Series = append(out.Series, x)
		}
		if scalar != nil {
			out.Scalar = &point{ts(scalar.Scalar.TimestampMs), fmtValue(scalar.Scalar.Value)}
			out.String = scalar.StringValue
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write([]string{"series", "timestamp", "value"})
		if scalar != nil {
			v := fmtValue(scalar.Scalar.Value)
			if typ == "string" {
				v = scalar.StringValue
			}
			cw.Write([]string{typ, ts(scalar.Scalar.TimestampMs), v})
		}
		for _, s := range res {
			for _, p := range cliPoints(s) {
				cw.Write([]string{labelString(s.Labels), ts(p.t), p.v})
			}
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	switch {
	case scalar != nil && typ == "string":
		fmt.Fprintln(tw, scalar.StringValue)
	case scalar != nil:
		fmt.Fprintln(tw, fmtValue(scalar.Scalar.Value))
	case typ == "vector":
		fmt.Fprintln(tw, "SERIES\tVALUE")
		for _, s := range res {
			if pts := cliPoints(s); len(pts) > 0 {
				fmt.Fprintf(tw, "%s\t%s\n", labelString(s.Labels), pts[0].v)
			}
		}
	case len(res) > 0 && len(res) <= 6:
		// A few series: one column each, one row per time.
		times := map[int64]bool{}
		vals := make([]map[int64]string, len(res))
		head := []string{"TIME"}
		for i, s := range res {
			vals[i] = map[int64]string{}
			for _, p := range cliPoints(s) {
				times[p.t] = true
				vals[i][p.t] = p.v
			}
			head = append(head, labelString(s.Labels))
		}
		var order []int64
		for t := range times {
			order = append(order, t)
		}
		sort.Slice(order, func(a, b int) bool { return order[a] < order[b] })
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, t := range order {
			row := []string{ts(t)}
			for i := range res {
				if v, ok := vals[i][t]; ok {
					row = append(row, v)
				} else {
					row = append(row, "")
				}
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	default:
		fmt.Fprintln(tw, "SERIES\tTIME\tVALUE")
		for _, s := range res {
			for _, p := range cliPoints(s) {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", labelString(s.Labels), ts(p.t), p.v)
			}
		}
	}
	return nil
}
