package e2e

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

const reloadConfig = `
workers: 2
services:
  - name: web
    listen: ["10.0.0.1:80", "[fd00::1]:80"]
    protocol: http
    routes:
      - match: ["a.example"]
        backends: ["BACKEND:8080"]
    default: reject
`

func TestReload(t *testing.T) {
	l := spliceLab(t, 1)
	f := startFalg(t, l, strings.ReplaceAll(reloadConfig, "BACKEND", "10.0.1.2"))
	defer f.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	write := func(body string) {
		t.Helper()
		old, _ := os.ReadFile(f.cfg)
		admin := strings.SplitN(string(old), "\n", 2)[0] + "\n"
		if err := os.WriteFile(f.cfg, []byte(admin+body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	served := func(want int) {
		t.Helper()
		r, err := exchange(ctx, l.Clients[0], "10.0.0.1:80", "a.example", false, 1000)
		if err != nil || r.Backend != l.Backends[want].Name {
			t.Errorf("a.example: %+v %v, want backend %d", r, err, want)
		}
	}
	served(0)

	// A long transfer to backend 0 goes on through the reload.
	long := make(chan error, 1)
	go func() {
		_, err := exchangeWith(ctx, l.Clients[0], "10.0.0.1:80", "a.example", xopts{n: 16 << 20, pace: 10 * time.Millisecond})
		long <- err
	}()
	f.waitStat("spliced", 2)

	write(strings.ReplaceAll(reloadConfig, "BACKEND", "10.0.1.3"))
	f.cmd.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !f.logHas("msg=reloaded") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	served(1)

	// An invalid configuration, and one changing what needs a restart,
	// are refused; the running routes stay.
	write("services: []\n")
	if out, err := l.Router.Command(ctx, falgBin, "reload", "-c", f.cfg).CombinedOutput(); err == nil {
		t.Errorf("reload of an invalid config succeeded: %s", out)
	}
	f.cmd.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(5 * time.Second)
	for !f.logHas("reload refused", "services") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !f.logHas("reload refused", "services") {
		t.Error("the invalid config's SIGHUP left no log line")
	}
	write("queue: 7\n" + strings.ReplaceAll(reloadConfig, "BACKEND", "10.0.1.2"))
	out, err := l.Router.Command(ctx, falgBin, "reload", "-c", f.cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "queue: changes only with a restart") {
		t.Errorf("reload changing queue: %v %s", err, out)
	}
	served(1)

	// And falg reload applies a valid one.
	write(strings.ReplaceAll(reloadConfig, "BACKEND", "10.0.1.2"))
	if out, err := l.Router.Command(ctx, falgBin, "reload", "-c", f.cfg).CombinedOutput(); err != nil || !strings.Contains(string(out), "reloaded") {
		t.Errorf("falg reload: %v %s", err, out)
	}
	served(0)

	if err := <-long; err != nil {
		t.Errorf("transfer across reloads: %v", err)
	}
}
