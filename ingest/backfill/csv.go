package backfill

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/headroomdb/headroom/storage/series"
)

// CSVOptions say how to read a CSV file's columns. The header row names
// them: the time column is the one named by TimeColumn or else the first
// of timestamp, time, ts, date, datetime; the metric name comes from a
// column named metric or __name__, or else from Metric; values come from
// ValueColumns or else the column named value; every other column is a
// label (its header must be a valid label name) unless ignored. Header
// names match case-insensitively.
type CSVOptions struct {
	Time          TimeOptions
	Metric        string
	Labels        series.Labels // added to every series
	TimeColumn    string
	ValueColumns  []string // several: one series each, told apart by the label "column"
	IgnoreColumns []string
}

type csvReader struct {
	r       *csv.Reader
	o       CSVOptions
	line    int
	timeCol int
	metric  int // column of the metric name, or -1
	values  []int
	labels  []int // columns that are labels
	names   []string
	rec     []string
	vi      int // next value column of rec
	cur     Sample
	base    series.Labels
	err     error
	skipped int
}

// NewCSV reads the header and returns a reader of the rows.
func NewCSV(r io.Reader, o CSVOptions) (Reader, error) {
	c := &csvReader{r: csv.NewReader(r), o: o, metric: -1, timeCol: -1}
	c.r.FieldsPerRecord = -1
	c.r.ReuseRecord = true
	c.r.TrimLeadingSpace = true
	header, err := c.r.Read()
	c.line = 1
	if err == io.EOF {
		return nil, lineErr(1, "empty file: want a header row naming the columns")
	}
	if err != nil {
		return nil, csvErr(1, err)
	}
	c.names = slices.Clone(header)
	if len(c.names) > 0 {
		c.names[0] = strings.TrimPrefix(c.names[0], "\ufeff") // a BOM from spreadsheet exports
	}
	find := func(name string) int {
		for i, h := range c.names {
			if strings.EqualFold(strings.TrimSpace(h), name) {
				return i
			}
		}
		return -1
	}
	used := map[int]bool{}
	if o.TimeColumn != "" {
		if c.timeCol = find(o.TimeColumn); c.timeCol < 0 {
			return nil, lineErr(1, "no column %q (--time-column) in the header %q", o.TimeColumn, header)
		}
	} else {
		for _, n := range []string{"timestamp", "time", "ts", "date", "datetime"} {
			if c.timeCol = find(n); c.timeCol >= 0 {
				break
			}
		}
		if c.timeCol < 0 {
			return nil, lineErr(1, "no timestamp column in the header %q: name one timestamp, time or ts, or pass --time-column", header)
		}
	}
	used[c.timeCol] = true
	for _, n := range []string{"metric", "__name__"} {
		if i := find(n); i >= 0 {
			c.metric = i
			used[i] = true
			break
		}
	}
	if c.metric < 0 && o.Metric == "" {
		return nil, lineErr(1, "no metric column in the header %q: name one metric, or pass --metric", header)
	}
	if len(o.ValueColumns) > 0 {
		for _, n := range o.ValueColumns {
			i := find(n)
			if i < 0 {
				return nil, lineErr(1, "no column %q (--value-columns) in the header %q", n, header)
			}
			c.values = append(c.values, i)
			used[i] = true
		}
	} else {
		i := find("value")
		if i < 0 {
			return nil, lineErr(1, "no value column in the header %q: name one value, or list them with --value-columns", header)
		}
		c.values = []int{i}
		used[i] = true
	}
	for _, n := range o.IgnoreColumns {
		i := find(n)
		if i < 0 {
			return nil, lineErr(1, "no column %q (--ignore-columns) in the header %q", n, header)
		}
		used[i] = true
	}
	for i, h := range c.names {
		if used[i] {
			continue
		}
		h = strings.TrimSpace(h)
		// A column names a label as PromQL writes it unquoted: a
		// header's stray space or dash is a typo, not a UTF-8 name.
		if !series.LegacyLabelName(h) || h == series.MetricName {
			return nil, lineErr(1, "column %d %q would be a label but is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*): rename it or pass --ignore-columns %q", i+1, h, h)
		}
		c.names[i] = h
		c.labels = append(c.labels, i)
	}
	c.base = slices.Clone(o.Labels)
	return c, nil
}

func csvErr(line int, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return lineErr(pe.Line, "%v", pe.Err)
	}
	return lineErr(line, "%v", err)
}

func (c *csvReader) Next() bool {
	for c.err == nil {
		if c.rec == nil || c.vi >= len(c.values) {
			rec, err := c.r.Read()
			if err == io.EOF {
				return false
			}
			if err != nil {
				c.err = csvErr(c.line+1, err)
				return false
			}
			c.line, _ = c.r.FieldPos(0)
			c.rec, c.vi = rec, 0
			if len(rec) != len(c.names) {
				c.err = lineErr(c.line, "%d columns, the header has %d", len(rec), len(c.names))
				return false
			}
			t, err := c.o.Time.ParseTime(rec[c.timeCol])
			if err != nil {
				c.err = lineErr(c.line, "column %q: %v", c.names[c.timeCol], err)
				return false
			}
			c.cur.T = t
		}
		col := c.values[c.vi]
		c.vi++
		raw := strings.TrimSpace(c.rec[col])
		if raw == "" {
			c.skipped++
			continue
		}
		v, err := parseValue(raw)
		if err != nil {
			c.err = lineErr(c.line, "column %q: %v", c.names[col], err)
			return false
		}
		ls := append(series.Labels(nil), c.base...)
		name := c.o.Metric
		if c.metric >= 0 {
			name = c.rec[c.metric]
		}
		ls = append(ls, series.Label{Name: series.MetricName, Value: name})
		for _, i := range c.labels {
			ls = append(ls, series.Label{Name: c.names[i], Value: c.rec[i]})
		}
		if len(c.values) > 1 {
			ls = append(ls, series.Label{Name: "column", Value: c.names[col]})
		}
		ls.Sort()
		if err := ls.Validate(); err != nil {
			c.err = lineErr(c.line, "%v", err)
			return false
		}
		c.cur.Labels, c.cur.V, c.cur.Line = ls, v, c.line
		return true
	}
	return false
}

func (c *csvReader) At() Sample   { return c.cur }
func (c *csvReader) Err() error   { return c.err }
func (c *csvReader) Skipped() int { return c.skipped }

// String describes the column roles, for the client's first progress line.
func (c *csvReader) String() string {
	var vals []string
	for _, i := range c.values {
		vals = append(vals, c.names[i])
	}
	var labels []string
	for _, i := range c.labels {
		labels = append(labels, c.names[i])
	}
	return fmt.Sprintf("time %q, values %q, labels %q", c.names[c.timeCol], vals, labels)
}
