package backfill

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

func readAll(r Reader) ([]string, error) {
	var out []string
	for r.Next() {
		s := r.At()
		out = append(out, fmt.Sprintf("%d %s %d %v", s.Line, s.Labels, s.T, s.V))
	}
	return out, r.Err()
}

func TestCSV(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database on this machine:", err) // the DST case needs one
	}
	for _, c := range []struct {
		name, in string
		o        CSVOptions
		want     []string
		err      string
	}{
		{name: "metric column and labels", in: "metric,host,timestamp,value\ncpu,a,2024-01-01T00:00:00Z,1.5\ncpu,b,1704067260,2\n",
			want: []string{`2 {__name__="cpu", host="a"} 1704067200000 1.5`, `3 {__name__="cpu", host="b"} 1704067260000 2`}},
		{name: "NAB spelling", in: "timestamp,value\n2014-04-02 14:29:00,0.066\n\"2014-04-02 14:34:00\",NaN\n", o: CSVOptions{Metric: "ec2_cpu"},
			want: []string{`2 {__name__="ec2_cpu"} 1396448940000 0.066`, `3 {__name__="ec2_cpu"} 1396449240000 NaN`}},
		{name: "MS spelling, gap, ignored column", in: "\"TimeStamp\",\"Value\",\"Label\"\n\"2018-04-25T00:00:00Z\",\"3\",\"0\"\n\"2018-04-25T00:01:00Z\",\"\",\"0\"\n",
			o:    CSVOptions{Metric: "rps", IgnoreColumns: []string{"label"}, Labels: series.Labels{{Name: "src", Value: "ms"}}},
			want: []string{`2 {__name__="rps", src="ms"} 1524614400000 3`}},
		{name: "milliseconds and extra labels", in: "ts,value,__name__\n1700000000123,4,up\n", want: []string{`2 {__name__="up"} 1700000000123 4`}},
		{name: "daylight saving repeat", in: "time,value\n2024-10-27 02:30:00,1\n2024-10-27 02:30:00,2\n", o: CSVOptions{Metric: "m", Time: TimeOptions{Location: berlin}},
			want: []string{`2 {__name__="m"} 1729992600000 1`, `3 {__name__="m"} 1729992600000 2`}},
		{name: "index time, wide", in: "i,split,m01,m02\n0,train,1,2\n1,test,3,\n", o: CSVOptions{Metric: "asd", TimeColumn: "i", ValueColumns: []string{"m01", "m02"},
			IgnoreColumns: []string{"split"}, Time: TimeOptions{IndexStart: time.Unix(1000, 0), IndexStep: 5 * time.Minute}},
			want: []string{`2 {__name__="asd", column="m01"} 1000000 1`, `2 {__name__="asd", column="m02"} 1000000 2`, `3 {__name__="asd", column="m01"} 1300000 3`}},
		{name: "no time column", in: "i,value\n", o: CSVOptions{Metric: "m"}, err: "line 1: no timestamp column"},
		{name: "no metric", in: "time,value\n", err: "line 1: no metric column"},
		{name: "no value", in: "time,v\n", o: CSVOptions{Metric: "m"}, err: "line 1: no value column"},
		{name: "bad label column", in: "time,value,host name\n", o: CSVOptions{Metric: "m"}, err: `"host name" would be a label`},
		{name: "bad time", in: "time,value\n2024-01-01T00:00:00Z,1\nyesterday,2\n", o: CSVOptions{Metric: "m"}, err: `line 3: column "time": unrecognised timestamp "yesterday"`},
		{name: "bad value", in: "time,value\n2024-01-01T00:00:00Z,1\n\n2024-01-01T00:01:00Z,x\n", o: CSVOptions{Metric: "m"}, err: `line 4: column "value": value "x" is not a number`},
		{name: "ragged", in: "time,value\n2024-01-01T00:00:00Z,1,3\n", o: CSVOptions{Metric: "m"}, err: "line 2: 3 columns, the header has 2"},
		{name: "bad quote", in: "time,value\n2024-01-01T00:00:00Z,\"1\n", o: CSVOptions{Metric: "m"}, err: "line 2"},
		{name: "bad metric name", in: "metric,time,value\n,2024-01-01T00:00:00Z,1\n", err: "line 2: invalid input"},
		{name: "empty", in: "", err: "line 1: empty file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := NewCSV(strings.NewReader(c.in), c.o)
			var got []string
			if err == nil {
				got, err = readAll(r)
			}
			if c.err != "" {
				var le *LineError
				if err == nil || !strings.Contains(err.Error(), c.err) || !errors.As(err, &le) {
					t.Fatalf("error %v, want a LineError containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

func TestPromText(t *testing.T) {
	in := `# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{ method = "get", path="a\"b\\c\nd", } 3 1395066363000

up 1
rpc_duration_seconds{quantile="0.5"} +Inf 1395066363001
x:y NaN 5
`
	r := NewPromText(strings.NewReader(in), PromOptions{DefaultTime: 42, Labels: series.Labels{{Name: "job", Value: "bf"}}})
	got, err := readAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`3 {__name__="http_requests_total", code="200", job="bf", method="post"} 1395066363000 1027`,
		`4 {__name__="http_requests_total", job="bf", method="get", path="a\"b\\c\nd"} 1395066363000 3`,
		`6 {__name__="up", job="bf"} 42 1`,
		`7 {__name__="rpc_duration_seconds", job="bf", quantile="0.5"} 1395066363001 ` + fmt.Sprint(math.Inf(1)),
		`8 {__name__="x:y", job="bf"} 5 NaN`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range []struct{ in, err string }{
		{"{a=\"b\"} 1", "want a metric name"},
		{"m{a=b} 1", `want '"' to open`},
		{"m{a=\"b} 1", "unterminated label value"},
		{"m{a=\"b\" c=\"d\"} 1", "want ',' or '}'"},
		{"m one", `value "one" is not a number`},
		{"m 1 2 3", "want a value and an optional timestamp"},
		{"m 1 1.5", "not an integer of milliseconds"},
		{"m{a=\"1\",a=\"2\"} 1", "duplicate label"},
		{"m{a=\"\\x\"} 1", `unknown escape \x`},
	} {
		r := NewPromText(strings.NewReader("ok 1 1\n"+c.in+"\n"), PromOptions{})
		_, err := readAll(r)
		if err == nil || !strings.Contains(err.Error(), "line 2: ") || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: error %v, want line 2 and %q", c.in, err, c.err)
		}
	}
}

func TestParseTime(t *testing.T) {
	for _, c := range []struct {
		in   string
		o    TimeOptions
		want int64
	}{
		{"2024-01-01T00:00:00.5+01:00", TimeOptions{}, 1704063600500},
		{"2024-01-01 00:00", TimeOptions{}, 1704067200000},
		{"2024-01-01", TimeOptions{}, 1704067200000},
		{"1704067200.25", TimeOptions{}, 1704067200250},
		{"1704067200000000", TimeOptions{}, 1704067200000},
		{"1704067200000000000", TimeOptions{}, 1704067200000},
		{"60", TimeOptions{Unit: "ms"}, 60},
	} {
		got, err := c.o.ParseTime(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseTime(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "-5", "NaN", "2024-13-01"} {
		if _, err := (TimeOptions{}).ParseTime(in); err == nil {
			t.Errorf("ParseTime(%q) succeeded", in)
		}
	}
}
