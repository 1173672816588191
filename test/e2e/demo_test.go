package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's first command's program, falg demo, and
// checks that it routed every request where its config says and left
// nothing behind.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("falg demo needs root")
		}
		t.Skip("falg demo needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, falgBin, "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("falg demo: %v\n%s", err, out)
	}
	s := string(out)
	if strings.Count(s, " yes\n") != 9 || !strings.Contains(s, "every request went where the config says") {
		t.Errorf("demo output:\n%s", s)
	}
	// web-tls keeps the client's address, web-http SNATs to the router.
	if !strings.Contains(s, "10.0.0.2:") || !strings.Contains(s, "10.0.1.1:") {
		t.Errorf("backends should see the client (tls) and the router (http):\n%s", s)
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "falg-demo") {
		t.Errorf("demo left namespaces: %s", ns)
	}
}
