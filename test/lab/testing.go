package lab

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// startTimeout bounds New inside Start.
const startTimeout = 30 * time.Second

// Start builds a lab for a test and removes it in t.Cleanup, which also runs
// when the test fails or panics. When the test cannot build a lab (not root,
// namespaces unavailable) it skips, or fails when the environment variable
// CI is "true". It first removes stale labs with the same prefix left by
// killed runs.
func Start(t testing.TB, o Options) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "lab: needs root")
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = "falg"
	}
	if names, err := CleanupStale(prefix); err != nil {
		t.Logf("lab: cleanup of stale labs: %v", err)
	} else if len(names) > 0 {
		t.Logf("lab: removed stale namespaces %v", names)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	l, err := New(ctx, o)
	if errors.Is(err, ErrUnavailable) {
		unavailable(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// unavailable skips the test, or fails it under CI=true.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: failing instead of skipping)")
	}
	t.Skip(why)
}
