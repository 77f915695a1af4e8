package query

import (
	"errors"
	"strings"
	"testing"
)

func TestNesting(t *testing.T) {
	for _, c := range []struct {
		q    string
		want int
	}{
		{`up`, 0},
		{`sum(rate(up{job="a"}[5m]))`, 3},
		{`up{job="(((("}`, 1},
		{`up{job="a\"(((("}`, 1},
		{"up{job=`\\`}", 1},
		{`label_replace(up, "a", "((", "b", "'")`, 1},
		{strings.Repeat("(", 300) + "1" + strings.Repeat(")", 300), 300},
	} {
		if got := nesting(c.q); got != c.want {
			t.Errorf("nesting(%.40q) = %d, want %d", c.q, got, c.want)
		}
	}
	if _, err := parse(strings.Repeat("(", MaxQueryDepth+1) + "1" + strings.Repeat(")", MaxQueryDepth+1)); !errors.Is(err, ErrBadQuery) || !strings.Contains(err.Error(), "nested 257 deep") {
		t.Errorf("too deep: %v", err)
	}
	if _, err := parse(strings.Repeat("(", MaxQueryDepth) + "1" + strings.Repeat(")", MaxQueryDepth)); err != nil {
		t.Errorf("at the depth limit: %v", err)
	}
	if _, err := parse("up" + strings.Repeat(" ", MaxQueryBytes)); !errors.Is(err, ErrBadQuery) || !strings.Contains(err.Error(), "too long") {
		t.Errorf("too long: %v", err)
	}
}
