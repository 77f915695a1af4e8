package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	"github.com/headroomdb/headroom/ingest/backfill"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/storage/series"
)

type writeConfig struct {
	client     clientFlags
	format     string
	batch      int
	timeout    time.Duration
	quiet      bool
	labels     labelFlags
	csv        backfill.CSVOptions
	valueCols  string
	ignoreCols string
	timezone   string
	indexStart string
	fileLabel  string
}

// labelFlags collects repeated --label name=value flags.
type labelFlags struct{ ls series.Labels }

func (l *labelFlags) String() string { return l.ls.String() }
func (l *labelFlags) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || !series.ValidLabelName(name) {
		return fmt.Errorf("want name=value with a valid label name, got %q", s)
	}
	l.ls = append(l.ls, series.Label{Name: name, Value: value})
	return nil
}

func runWrite(args []string) error {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	c := &writeConfig{}
	c.client.register(fs)
	fs.StringVar(&c.format, "format", "auto", "csv, prom (Prometheus text exposition) or auto (by file extension, else by the first line)")
	fs.IntVar(&c.batch, "batch-samples", 10_000, "samples per write request")
	fs.DurationVar(&c.timeout, "timeout", time.Minute, "deadline of each write request")
	fs.StringVar(&c.fileLabel, "file-label", "", "add this label, valued with each file's base name without extensions, so that files of one metric stay separate series")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress, only errors and the final count")
	fs.Var(&c.labels, "label", "name=value label added to every series (repeatable)")
	fs.StringVar(&c.csv.Metric, "metric", "", "CSV: metric name, when the file has no metric column")
	fs.StringVar(&c.csv.TimeColumn, "time-column", "", "CSV: the time column (default: the one named timestamp, time, ts, date or datetime)")
	fs.StringVar(&c.valueCols, "value-columns", "", "CSV: comma-separated value columns (default: the one named value); with several, each is a series labelled column=<name>")
	fs.StringVar(&c.ignoreCols, "ignore-columns", "", "CSV: comma-separated columns to skip instead of making them labels")
	fs.StringVar(&c.timezone, "timezone", "UTC", "zone of timestamps written without one (an IANA name like Europe/Berlin, or Local)")
	fs.StringVar(&c.csv.Time.Unit, "time-unit", "", "unit of numeric timestamps: s, ms, us or ns (default: guessed from the magnitude)")
	fs.StringVar(&c.indexStart, "index-start", "", "CSV: read the time column as a row index; the time of index 0 (RFC 3339); needs --index-step")
	fs.DurationVar(&c.csv.Time.IndexStep, "index-step", 0, "CSV: time between consecutive indexes, with --index-start")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: headroom write [flags] [FILE...]

Pushes samples to a Headroom server over gRPC, in batches, for backfilling
history. FILEs (or stdin, or "-") are CSV or Prometheus text exposition,
optionally gzipped (.gz).

CSV: a header row names the columns: a time column (timestamp, time, ts,
...), a value column (value), a metric column (metric or __name__) unless
--metric names the metric, and labels (every other column). Timestamps may
be RFC 3339, "2006-01-02 15:04:05" (in --timezone) or Unix time in s, ms,
us or ns. Empty values are gaps and are skipped.

Prometheus text: name{label="value",...} value [timestamp_ms]; samples
without a timestamp get the current time.

The server must keep the samples' age: start it with a --retention that
covers the history. A refused batch stops the command with the lines it
held and the server's reason; every batch before it is stored.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.batch < 1 {
		return fmt.Errorf("--batch-samples %d: want at least 1", c.batch)
	}
	loc, err := time.LoadLocation(c.timezone)
	if err != nil {
		return fmt.Errorf("--timezone: %w", err)
	}
	c.csv.Time.Location = loc
	if c.indexStart != "" {
		t, err := time.Parse(time.RFC3339, c.indexStart)
		if err != nil {
			return fmt.Errorf("--index-start: %w", err)
		}
		c.csv.Time.IndexStart = t
		if c.csv.Time.IndexStep <= 0 {
			return errors.New("--index-start needs --index-step")
		}
	} else if c.csv.Time.IndexStep > 0 {
		return errors.New("--index-step needs --index-start")
	}
	c.csv.ValueColumns = splitList(c.valueCols)
	c.csv.IgnoreColumns = splitList(c.ignoreCols)
	if c.fileLabel != "" && !series.ValidLabelName(c.fileLabel) {
		return fmt.Errorf("--file-label %q is not a valid label name", c.fileLabel)
	}
	switch c.format {
	case "auto", "csv", "prom":
	default:
		return fmt.Errorf("--format %q: want csv, prom or auto", c.format)
	}
	files := fs.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	conn, err := c.client.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	w := &writer{cfg: c, client: headroomv1.NewIngestClient(conn), start: time.Now()}
	w.progress = newProgress(os.Stderr, c.quiet)
	for _, f := range files {
		if err := w.file(f); err != nil {
			w.progress.done()
			fmt.Fprintf(os.Stderr, "stored before the error: %d samples\n", w.samples)
			return err
		}
	}
	w.progress.done()
	el := time.Since(w.start)
	fmt.Printf("wrote %d samples of %d series from %d file(s) in %v (%.0f samples/s)", w.samples, len(w.seriesSeen), len(files), el.Round(time.Millisecond), float64(w.samples)/el.Seconds())
	if w.skipped > 0 {
		fmt.Printf("; skipped %d empty values", w.skipped)
	}
	fmt.Println()
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

type writer struct {
	cfg        *writeConfig
	client     headroomv1.IngestClient
	start      time.Time
	samples    int64
	skipped    int
	seriesSeen map[string]struct{}
	progress   *progress
}

// countingReader counts bytes read, for the progress bar.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (w *writer) file(name string) error {
	var in io.Reader = os.Stdin
	var size int64 = -1
	label := name
	if name == "-" {
		label = "stdin"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		in = f
	}
	var read atomic.Int64
	br := bufio.NewReaderSize(countingReader{in, &read}, 256<<10)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%s: gzip: %w", label, err)
		}
		src = bufio.NewReaderSize(gz, 256<<10)
	}
	labels := w.cfg.labels.ls
	if w.cfg.fileLabel != "" {
		base := filepath.Base(label)
		if i := strings.IndexByte(base, '.'); i > 0 {
			base = base[:i]
		}
		labels = append(labels[:len(labels):len(labels)], series.Label{Name: w.cfg.fileLabel, Value: base})
	}
	csvOpts := w.cfg.csv
	csvOpts.Labels = labels
	format := w.cfg.format
	if format == "auto" {
		format = detectFormat(name, src.(*bufio.Reader))
	}
	var r backfill.Reader
	if format == "csv" {
		cr, err := backfill.NewCSV(src, csvOpts)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		r = cr
		if s, ok := cr.(fmt.Stringer); ok && !w.cfg.quiet {
			fmt.Fprintf(os.Stderr, "%s: CSV, %s\n", label, s)
		}
	} else {
		r = backfill.NewPromText(src, backfill.PromOptions{DefaultTime: time.Now().UnixMilli(), Labels: labels})
	}
	w.progress.startFile(label, size, &read)
	if w.seriesSeen == nil {
		w.seriesSeen = map[string]struct{}{}
	}
	b := newBatch()
	for r.Next() {
		s := r.At()
		b.add(s)
		if b.samples >= w.cfg.batch {
			if err := w.send(label, b); err != nil {
				return err
			}
			b = newBatch()
		}
	}
	if err := r.Err(); err != nil {
		if err2 := w.send(label, b); err2 != nil {
			return err2
		}
		return fmt.Errorf("%s: %w (everything before this line is stored)", label, err)
	}
	w.skipped += r.Skipped()
	return w.send(label, b)
}

// detectFormat guesses from the name, then from the first line: CSV
// headers have commas and no braces; exposition lines start with # or a
// metric name followed by { or a space.
func detectFormat(name string, r *bufio.Reader) string {
	base := strings.TrimSuffix(strings.ToLower(filepath.Base(name)), ".gz")
	switch filepath.Ext(base) {
	case ".csv", ".tsv":
		return "csv"
	case ".prom", ".txt", ".metrics":
		return "prom"
	}
	peek, _ := r.Peek(4096)
	line, _, _ := strings.Cut(string(peek), "\n")
	if strings.HasPrefix(line, "#") || strings.Contains(line, "{") || !strings.Contains(line, ",") {
		return "prom"
	}
	return "csv"
}

// batch groups samples by series into one WriteRequest, remembering the
// lines it holds so that a refusal can name them.
type batch struct {
	req       *headroomv1.WriteRequest
	index     map[string]int
	firstLine []int // per series
	samples   int
	minLine   int
	maxLine   int
	key       []byte // scratch: the series key of the sample being added
}

func newBatch() *batch {
	return &batch{req: &headroomv1.WriteRequest{}, index: map[string]int{}}
}

func (b *batch) add(s backfill.Sample) {
	// A cheap key (Labels.String quotes every value) looked up without
	// converting it to a string: only a new series allocates one.
	b.key = b.key[:0]
	for _, l := range s.Labels {
		b.key = append(append(append(append(b.key, l.Name...), 0xff), l.Value...), 0xfe)
	}
	i, ok := b.index[string(b.key)]
	if !ok {
		i = len(b.req.Series)
		b.index[string(b.key)] = i
		ser := &headroomv1.Series{}
		for _, l := range s.Labels {
			ser.Labels = append(ser.Labels, &headroomv1.Label{Name: l.Name, Value: l.Value})
		}
		b.req.Series = append(b.req.Series, ser)
		b.firstLine = append(b.firstLine, s.Line)
	}
	b.req.Series[i].Samples = append(b.req.Series[i].Samples, &headroomv1.Sample{TimestampMs: s.T, Value: s.V})
	if b.samples == 0 || s.Line < b.minLine {
		b.minLine = s.Line
	}
	if s.Line > b.maxLine {
		b.maxLine = s.Line
	}
	b.samples++
}

func (w *writer) send(label string, b *batch) error {
	if b.samples == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.timeout)
	defer cancel()
	resp, err := w.client.Write(ctx, b.req)
	if err != nil {
		st := status.Convert(err)
		where := fmt.Sprintf("lines %d-%d", b.minLine, b.maxLine)
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
				var i int
				if _, e := fmt.Sscanf(br.FieldViolations[0].Field, "series[%d]", &i); e == nil && i < len(b.firstLine) {
					where = fmt.Sprintf("line %d (a series first seen there; its batch holds lines %d-%d)", b.firstLine[i], b.minLine, b.maxLine)
				}
			}
		}
		return fmt.Errorf("%s: %s: server refused the batch (%s): %s", label, where, st.Code(), st.Message())
	}
	w.samples += int64(resp.SamplesWritten)
	for k := range b.index {
		w.seriesSeen[k] = struct{}{}
	}
	w.progress.update(w.samples, b.maxLine)
	return nil
}
