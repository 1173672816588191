package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"falg/test/lab"
)

// falg is a falg run process in a lab's router.
type falg struct {
	t     testing.TB
	lab   *lab.Lab
	cfg   string
	admin string
	cmd   *os.Process
	wait  func() error
	out   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeConfig writes yaml, with the admin socket in a temp dir, and returns
// the file and socket paths.
func writeConfig(t testing.TB, yaml string) (cfg, admin string) {
	t.Helper()
	dir := t.TempDir()
	admin = filepath.Join(dir, "falg.sock")
	cfg = filepath.Join(dir, "falg.yaml")
	if err := os.WriteFile(cfg, []byte("admin: "+admin+"\n"+yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, admin
}

// startFalg runs falg in the lab's router on yaml and waits until it
// answers on its admin socket.
func startFalg(t testing.TB, l *lab.Lab, yaml string) *falg {
	t.Helper()
	cfg, admin := writeConfig(t, yaml)
	f := &falg{t: t, lab: l, cfg: cfg, admin: admin}
	f.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("falg log:\n%s", f.out.String())
		}
	})
	return f
}

func (f *falg) start() {
	f.t.Helper()
	f.out = &syncBuffer{}
	cmd := f.lab.Router.Command(context.Background(), falgBin, "run", "-c", f.cfg, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = f.out, f.out
	if err := f.lab.StartCmd(cmd); err != nil {
		f.t.Fatal(err)
	}
	f.cmd = cmd.Process
	f.wait = func() error { return f.lab.Wait(cmd) }
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := f.statsErr(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("falg did not come up:\n%s", f.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getJSON decodes what falg's admin socket answers at path into v.
func (f *falg) getJSON(path string, v any) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", f.admin)
		},
	}}
	resp, err := c.Get("http://falg" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func (f *falg) statsErr() (m map[string]int64, err error) {
	return m, f.getJSON("/stats", &m)
}

// stats reads falg's counters.
func (f *falg) stats() map[string]int64 {
	f.t.Helper()
	m, err := f.statsErr()
	if err != nil {
		f.t.Fatalf("stats: %v", err)
	}
	return m
}

// waitStat waits until counter name reaches at least want.
func (f *falg) waitStat(name string, want int64) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := f.stats()[name]
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("counter %s = %d, want >= %d; all: %v", name, got, want, f.stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and expects a clean exit.
func (f *falg) stop() {
	f.t.Helper()
	if err := f.cmd.Signal(syscall.SIGTERM); err != nil {
		f.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.wait() }()
	select {
	case err := <-done:
		if err != nil {
			f.t.Fatalf("falg exited with %v:\n%s", err, f.out.String())
		}
	case <-time.After(10 * time.Second):
		f.t.Fatalf("falg did not stop on SIGTERM:\n%s", f.out.String())
	}
}

// kill9 kills falg without letting it clean up.
func (f *falg) kill9() {
	f.t.Helper()
	f.cmd.Signal(syscall.SIGKILL)
	f.wait()
}

// logHas reports whether falg's log has a line containing all of parts.
func (f *falg) logHas(parts ...string) bool {
	for _, line := range strings.Split(f.out.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// run runs a command in ns and returns its stdout.
func run(t testing.TB, ns *lab.NS, name string, args ...string) string {
	t.Helper()
	cmd := ns.Command(context.Background(), name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v in %s: %v: %s", name, args, ns, err, stderr.String())
	}
	return string(out)
}

func addr(a fmt.Stringer, port int) string {
	return net.JoinHostPort(a.String(), fmt.Sprint(port))
}
