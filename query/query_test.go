package query

import (
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{in: `up`, want: `__name__="up"`},
		{in: `up{job="node",instance!="a",path=~"/api/.*",code!~"5.."}`, want: `__name__="up" job="node" instance!="a" path=~"/api/.*" code!~"5.."`},
		{in: `{__name__=~"node_.+"}`, want: `__name__=~"node_.+"`},
		{in: `{job=~".*"}`, err: "at least one non-empty matcher"},
		{in: `up{job="a" or job="b"}`, err: `unexpected identifier "or" in label matching`},
		{in: `rate(up[5m])`, err: "not a series selector"},
		{in: `up{`, err: "bad query"},
	} {
		ms, err := ParseSelector(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseSelector(%q) = %v, %v; want an error with %q", c.in, ms, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", c.in, err)
			continue
		}
		var got []string
		for _, m := range ms {
			got = append(got, m.String())
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("ParseSelector(%q) = %s, want %s", c.in, strings.Join(got, " "), c.want)
		}
	}
}
