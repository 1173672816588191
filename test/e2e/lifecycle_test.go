package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"falg/config"
	"falg/nft"
	"falg/test/lab"
)

const lifecycleConfig = `
workers: 2
services:
  - name: web
    listen: ["10.0.0.1:443", "[fd00::1]:443"]
    protocol: tls
    timeouts: { first_data: 1s }
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:8443"]
    default: reject
`

// rawSockets counts IPPROTO_RAW (255) sockets in ns.
func rawSockets(t *testing.T, ns *lab.NS) int {
	n := 0
	for _, f := range []string{"/proc/net/raw", "/proc/net/raw6"} {
		for _, line := range strings.Split(run(t, ns, "cat", f), "\n")[1:] {
			fields := strings.Fields(line)
			// local_address is addr:proto in hex for raw sockets.
			if len(fields) > 1 && strings.HasSuffix(fields[1], ":00FF") {
				n++
			}
		}
	}
	return n
}

func tables(t *testing.T, ns *lab.NS) string { return run(t, ns, "nft", "list", "tables") }

// TestRunLifecycle: falg installs what falg rules prints, queues a client's
// SYN, removes its table and sockets on SIGTERM, and after kill -9 a new
// falg replaces the stale table and serves.
func TestRunLifecycle(t *testing.T) {
	l := lab.Start(t, lab.Options{Clients: 1, Backends: 1})
	f := startFalg(t, l, lifecycleConfig)

	printed := run(t, l.Router, falgBin, "rules", "-c", f.cfg)
	listed := run(t, l.Router, "nft", "list", "table", "inet", nft.Table)
	c, err := config.Load(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs := nft.New(c)
	if rs.Canonical(listed) != rs.Canonical(printed) {
		t.Errorf("installed table differs from falg rules:\n--- nft list\n%s\n--- falg rules\n%s", listed, printed)
	}
	if n := rawSockets(t, l.Router); n != 2 {
		t.Errorf("%d raw sockets while running, want 2 (v4 and v6)", n)
	}

	// A client's SYN reaches the queue; its handshake ACK does not (the
	// kernel drops the pure ACKs of a tls service's pending flows); the
	// client that then sends nothing is reset after first_data.
	before := f.stats()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:443")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	conn.Close()
	if !isReset(err) {
		t.Errorf("silent client: read gave %v, want a reset", err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("reset after %v, before first_data (1s)", d)
	}
	after := f.stats()
	if after["queued"] != before["queued"]+1 || after["flows"] != before["flows"]+1 || after["silent"] != before["silent"]+1 {
		t.Errorf("counters before %v after %v: want queued +1 (the SYN), flows +1, silent +1", before, after)
	}
	if n := ackDrops(t, l.Router); n != 1 {
		t.Errorf("pure-ACK drop rules counted %d packets, want 1 (the handshake's ACK)", n)
	}

	f.stop()
	if strings.Contains(tables(t, l.Router), "inet falg") {
		t.Error("table left after SIGTERM")
	}
	if n := rawSockets(t, l.Router); n != 0 {
		t.Errorf("%d raw sockets left after SIGTERM", n)
	}
	if _, err := os.Stat(f.admin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left: %v", err)
	}

	// kill -9 leaves the table; the next falg replaces it and serves.
	f.start()
	f.kill9()
	if !strings.Contains(tables(t, l.Router), "inet falg") {
		t.Fatalf("kill -9 removed the table? tables: %q log:\n%s", tables(t, l.Router), f.out.String())
	}
	f.start()
	before = f.stats()
	if _, err := l.Clients[0].Dial(ctx, "tcp", "[fd00::1]:443"); err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	f.waitStat("flows", before["flows"]+1)
	if got := strings.Count(tables(t, l.Router), "inet falg\n"); got != 1 {
		t.Errorf("%d falg tables after restart", got)
	}
	f.stop()
}

// TestUnlistenedPortNotQueued: a SYN to a port no service listens on never
// reaches falg; the router's own stack refuses it.
func TestUnlistenedPortNotQueued(t *testing.T) {
	l := lab.Start(t, lab.Options{Clients: 1, Backends: 1})
	f := startFalg(t, l, lifecycleConfig)
	before := f.stats()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, a := range []string{"10.0.0.1:444", "[fd00::1]:80", "10.0.0.1:8443"} {
		_, err := l.Clients[0].Dial(ctx, "tcp", a)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect %s: %v, want refused by the router", a, err)
		}
	}
	if after := f.stats(); after["queued"] != before["queued"] {
		t.Errorf("queued went from %d to %d", before["queued"], after["queued"])
	}
	f.stop()
}

// TestSecondFalgRefused: a running falg keeps a second one from starting,
// whether it shares the admin socket, the queues or only the table, and
// the refused one leaves the first one's ruleset alone.
func TestSecondFalgRefused(t *testing.T) {
	l := lab.Start(t, lab.Options{Clients: 1, Backends: 1})
	f := startFalg(t, l, lifecycleConfig)
	sameQueues, _ := writeConfig(t, lifecycleConfig)
	otherQueues, _ := writeConfig(t, "queue: 10\n"+lifecycleConfig)
	for _, c := range []struct{ cfg, want string }{
		{f.cfg, "another falg is running"},
		{sameQueues, "queue 0 is read by netlink port"},
		{otherQueues, "table inet falg belongs to a running falg"},
	} {
		out, err := l.Router.Command(context.Background(), falgBin, "run", "-c", c.cfg).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("second falg: %v: %s; want %q", err, out, c.want)
		}
	}
	// The first still serves, with its table.
	before := f.stats()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:443"); err != nil {
		t.Fatal(err)
	}
	f.waitStat("flows", before["flows"]+1)
	f.stop()
}

// ackDrops sums the packet counters of falg's pure-ACK drop rules.
func ackDrops(t *testing.T, router *lab.NS) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(run(t, router, "nft", "list", "chain", "inet", "falg", "prerouting"), "\n") {
		if !strings.Contains(line, "tcp flags == ack counter packets ") || !strings.HasSuffix(line, " drop") {
			continue
		}
		var p int
		if _, err := fmt.Sscanf(line[strings.Index(line, "counter packets ")+len("counter packets "):], "%d", &p); err != nil {
			t.Fatalf("counter in %q: %v", line, err)
		}
		n += p
	}
	return n
}
