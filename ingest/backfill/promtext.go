package backfill

import (
	"bufio"
	"io"
	"strconv"
	"strings"

	"github.com/headroomdb/headroom/storage/series"
)

// PromOptions say how to read the Prometheus text exposition format.
type PromOptions struct {
	// DefaultTime is the time of samples written without a timestamp
	// (milliseconds); a backfill file should carry its own.
	DefaultTime int64
	Labels      series.Labels // added to every series
}

type promReader struct {
	sc      *bufio.Scanner
	o       PromOptions
	line    int
	cur     Sample
	err     error
	skipped int
}

// NewPromText returns a reader of the text exposition format
// (`name{label="value",...} value [timestamp_ms]`, # comments).
func NewPromText(r io.Reader, o PromOptions) Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	return &promReader{sc: sc, o: o}
}

func (p *promReader) Next() bool {
	for p.err == nil && p.sc.Scan() {
		p.line++
		text := strings.TrimSpace(p.sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		s, err := parsePromLine(text, p.o)
		if err != nil {
			p.err = lineErr(p.line, "%v", err)
			return false
		}
		s.Line = p.line
		p.cur = s
		return true
	}
	if p.err == nil && p.sc.Err() != nil {
		p.err = lineErr(p.line+1, "%v", p.sc.Err())
	}
	return false
}

func (p *promReader) At() Sample   { return p.cur }
func (p *promReader) Err() error   { return p.err }
func (p *promReader) Skipped() int { return p.skipped }

type promErr string

func (e promErr) Error() string { return string(e) }

func isNameChar(c byte, first, colon bool) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9') || (colon && c == ':')
}

func parsePromLine(s string, o PromOptions) (Sample, error) {
	i := 0
	for i < len(s) && isNameChar(s[i], i == 0, true) {
		i++
	}
	if i == 0 {
		return Sample{}, promErr("want a metric name at the start of the line")
	}
	ls := append(series.Labels(nil), o.Labels...)
	ls = append(ls, series.Label{Name: series.MetricName, Value: s[:i]})
	s = s[i:]
	if len(s) > 0 && s[0] == '{' {
		s = s[1:]
		for {
			s = strings.TrimLeft(s, " \t")
			if len(s) > 0 && s[0] == '}' {
				s = s[1:]
				break
			}
			j := 0
			for j < len(s) && isNameChar(s[j], j == 0, false) {
				j++
			}
			if j == 0 {
				return Sample{}, promErr("want a label name or '}' at " + strconv.Quote(trunc(s)))
			}
			name := s[:j]
			s = strings.TrimLeft(s[j:], " \t")
			if len(s) < 2 || s[0] != '=' {
				return Sample{}, promErr("want '=\"' after label " + strconv.Quote(name))
			}
			s = strings.TrimLeft(s[1:], " \t")
			if len(s) == 0 || s[0] != '"' {
				return Sample{}, promErr("want '\"' to open the value of label " + strconv.Quote(name))
			}
			val, rest, err := unescape(s[1:])
			if err != nil {
				return Sample{}, promErr("label " + strconv.Quote(name) + ": " + err.Error())
			}
			ls = append(ls, series.Label{Name: name, Value: val})
			s = strings.TrimLeft(rest, " \t")
			if len(s) > 0 && s[0] == ',' {
				s = s[1:]
				continue
			}
			if len(s) > 0 && s[0] == '}' {
				s = s[1:]
				break
			}
			return Sample{}, promErr("want ',' or '}' after the value of label " + strconv.Quote(name))
		}
	}
	fields := strings.Fields(s)
	if len(fields) < 1 || len(fields) > 2 {
		return Sample{}, promErr("want a value and an optional timestamp after the series, got " + strconv.Quote(trunc(s)))
	}
	v, err := parseValue(fields[0])
	if err != nil {
		return Sample{}, err
	}
	t := o.DefaultTime
	if len(fields) == 2 {
		t, err = strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return Sample{}, promErr("timestamp " + strconv.Quote(fields[1]) + " is not an integer of milliseconds")
		}
	}
	ls.Sort()
	if err := ls.Validate(); err != nil {
		return Sample{}, err
	}
	return Sample{Labels: ls, T: t, V: v}, nil
}

// unescape reads a label value up to its closing quote: \\, \" and \n
// are the format's escapes.
func unescape(s string) (string, string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			if i+1 == len(s) {
				return "", "", promErr("unterminated escape")
			}
			i++
			switch s[i] {
			case '\\':
				b.WriteByte('\\')
			case '"':
				b.WriteByte('"')
			case 'n':
				b.WriteByte('\n')
			default:
				return "", "", promErr("unknown escape \\" + string(s[i]))
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", promErr("unterminated label value")
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
