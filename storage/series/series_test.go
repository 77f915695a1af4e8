package series

import (
	"errors"
	"hash/fnv"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	f := func(ls Labels, want string) {
		t.Helper()
		err := ls.Validate()
		if want == "" {
			if err != nil {
				t.Errorf("Validate(%v) = %v, want nil", ls, err)
			}
			return
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%v) = %v, want ErrInvalid mentioning %q", ls, err, want)
		}
	}
	f(FromStrings("__name__", "up", "job", "node"), "")
	f(FromStrings("__name__", "up", "empty", ""), "")
	f(nil, "empty label set")
	f(Labels{{Name: "job", Value: "a"}}, "missing metric name")
	f(Labels{{Name: "__name__", Value: ""}}, "empty metric name")
	f(Labels{{Name: "__name__", Value: "a"}, {Name: "a\tb", Value: "1"}}, `invalid label name "a\tb"`)
	f(Labels{{Name: "__name__", Value: "a"}, {Name: "a\u0085", Value: "1"}}, `invalid label name "a\u0085"`)
	f(Labels{{Name: "__name__", Value: "a"}, {Name: "a\xff", Value: "1"}}, `invalid label name "a\xff"`)
	// Prometheus 3's UTF-8 names.
	f(Labels{{Name: "0x", Value: "1"}, {Name: "__name__", Value: "a"}, {Name: "service.name", Value: "api"}, {Name: "équipe", Value: "b"}}, "")
	f(Labels{{Name: "__name__", Value: "a"}, {Name: "", Value: "1"}}, `invalid label name ""`)
	f(Labels{{Name: "__name__", Value: "a"}, {Name: "a", Value: "1"}, {Name: "a", Value: "2"}}, "duplicate")
	f(Labels{{Name: "b", Value: "1"}, {Name: "__name__", Value: "a"}}, "not sorted")
	f(Labels{{Name: "__name__", Value: "a"}, {Name: "v", Value: "\xc3"}}, "UTF-8")
}

// The hash is part of the on-disk format: it must stay FNV-1a-64 over
// name 0xff value 0xfe for each label, checked here against the standard
// library's FNV.
func TestHashStable(t *testing.T) {
	for _, ls := range []Labels{
		FromStrings("__name__", "up"),
		FromStrings("__name__", "up", "job", "node", "instance", "host:9100"),
		FromStrings("__name__", "x", "v", "ünïcode"),
	} {
		h := fnv.New64a()
		for _, l := range ls {
			h.Write([]byte(l.Name))
			h.Write([]byte{0xff})
			h.Write([]byte(l.Value))
			h.Write([]byte{0xfe})
		}
		if got, want := ls.Hash(), h.Sum64(); got != want {
			t.Errorf("Hash(%v) = %d, want %d", ls, got, want)
		}
	}
	if FromStrings("a", "bc").Hash() == FromStrings("ab", "c").Hash() {
		t.Error("Hash does not separate name from value")
	}
}

func TestMatcherAnchored(t *testing.T) {
	f := func(typ MatchType, pattern, v string, want bool) {
		t.Helper()
		m, err := NewMatcher(typ, "x", pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Matches(v); got != want {
			t.Errorf("%s.Matches(%q) = %v, want %v", m, v, got, want)
		}
	}
	f(MatchRegexp, "web", "web-1", false)
	f(MatchRegexp, "web.*", "web-1", true)
	f(MatchRegexp, "a|b", "ab", false)
	f(MatchRegexp, ".*", "multi\nline", true)
	f(MatchNotRegexp, "web.*", "db", true)
	f(MatchEqual, "", "", true)
	f(MatchNotEqual, "a", "", true)
	if _, err := NewMatcher(MatchRegexp, "x", "("); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewMatcher with a bad regexp = %v, want ErrInvalid", err)
	}
}

func TestStaleNaN(t *testing.T) {
	if !IsStaleNaN(StaleNaN) {
		t.Fatal("IsStaleNaN(StaleNaN) = false")
	}
	var nan float64
	nan = nan / nan
	if IsStaleNaN(nan) {
		t.Fatal("an ordinary NaN is not the stale marker")
	}
}

func TestCompare(t *testing.T) {
	a := FromStrings("__name__", "up", "job", "a")
	for _, c := range []struct {
		b    Labels
		sign int
	}{
		{FromStrings("__name__", "up", "job", "a"), 0},
		{FromStrings("__name__", "up", "job", "b"), -1},
		{FromStrings("__name__", "up"), 1},
		{FromStrings("__name__", "up", "job", "a", "x", "1"), -1},
		{FromStrings("__name__", "a", "job", "z"), 1},
		{FromStrings("__name__", "up", "instance", "z"), 1},
	} {
		got := Compare(a, c.b)
		if (got > 0) != (c.sign > 0) || (got < 0) != (c.sign < 0) {
			t.Errorf("Compare(%s, %s) = %d, want sign %d", a, c.b, got, c.sign)
		}
	}
}
