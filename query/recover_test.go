package query

import (
	"errors"
	"strings"
	"testing"
)

// A panic in a worker goroutine becomes that query's execution error.
func TestRecoverTo(t *testing.T) {
	var err error
	func() {
		defer recoverTo(&err)
		var m map[string]int
		m["x"]++ // a nil map write panics
	}()
	if !errors.Is(err, ErrExec) || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("err = %v", err)
	}
}
