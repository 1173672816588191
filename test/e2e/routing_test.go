package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"falg/test/lab"
)

// spliceConfig routes TLS by SNI and HTTP by Host to the lab's two
// backends. %[1]s is the source mode.
const spliceConfig = `
workers: 2
services:
  - name: tls
    listen: ["10.0.0.1:443", "[fd00::1]:443"]
    protocol: tls
    source: %[1]s
    routes:
      - match: ["a.example", "*.a.example"]
        backends: ["10.0.1.2:8443", "[fd00:1::2]:8443"]
      - match: ["~^api-[0-9]+\\.b\\.example$"]
        backends: ["10.0.1.3:8443", "[fd00:1::3]:8443"]
    default: ["10.0.1.3:8443", "[fd00:1::3]:8443"]
  - name: tls-strict
    listen: ["10.0.0.1:4443", "[fd00::1]:4443"]
    protocol: tls
    source: %[1]s
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:8443", "[fd00:1::2]:8443"]
    default: reject
  - name: http
    listen: ["10.0.0.1:80", "[fd00::1]:80"]
    protocol: http
    source: %[1]s
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:8080", "[fd00:1::2]:8080"]
      - match: ["*.b.example"]
        backends: ["10.0.1.3:8080", "[fd00:1::3]:8080"]
    default: reject
  - name: refusing
    listen: ["10.0.0.1:81", "[fd00::1]:81"]
    protocol: http
    source: %[1]s
    timeouts: { connect: 5s }
    routes:
      - match: ["next.example"]
        backends: ["10.0.1.2:9", "10.0.1.3:8080"]
      - match: ["none.example"]
        backends: ["10.0.1.2:9", "10.0.1.3:9"]
    default: reject
`

// spliceLab is a lab with the test backends on both backend hosts: TLS on
// 8443, plain on 8080.
func spliceLab(t *testing.T, clients int) *lab.Lab {
	l := lab.Start(t, lab.Options{Clients: clients, Backends: 2})
	for _, b := range l.Backends {
		serve(t, b, 8443, true)
		serve(t, b, 8080, false)
	}
	return l
}

// routed checks the outcome of one routing case: a reset where the case
// wants one, else the backend it names. It reports whether the flow was
// served as it should be, so the caller may check more of it.
func routed(t *testing.T, l *lab.Lab, name string, c dest, r result, err error) bool {
	t.Helper()
	switch {
	case c.backend < 0:
		if !isReset(err) {
			t.Errorf("%s: got %+v, %v; want a reset", name, r, err)
		}
		return false
	case err != nil:
		t.Errorf("%s: %v", name, err)
		return false
	case r.Backend != l.Backends[c.backend].Name:
		t.Errorf("%s: served by %s, want %s", name, r.Backend, l.Backends[c.backend].Name)
		return false
	}
	return true
}

type dest struct {
	port    int
	name    string
	tls     bool
	backend int // -1: the client must be reset
}

var routingCases = []dest{
	{443, "a.example", true, 0},        // exact
	{443, "www.a.example", true, 0},    // wildcard
	{443, "API-12.b.example", true, 1}, // regex, after lower-casing
	{443, "other.example", true, 1},    // default backends
	{4443, "a.example", true, 0},       // exact on a rejecting service
	{4443, "other.example", true, -1},  // default: reject
	{80, "a.example", false, 0},        // Host
	{80, "x.b.example", false, 1},      // Host wildcard
	{80, "nope.example", false, -1},    // Host, rejected
	{81, "next.example", false, 1},     // first backend refuses: the next serves (v4 only: no v6 backends)
}

func TestSNIAndHostRouting(t *testing.T) {
	l := spliceLab(t, 1)
	client := l.Clients[0]
	for _, source := range []string{"client", "router"} {
		t.Run("source="+source, func(t *testing.T) {
			f := startFalg(t, l, fmt.Sprintf(spliceConfig, source))
			defer f.stop()
			for _, family := range []string{"v4", "v6"} {
				router, clientAddr, routerBack := l.Router.Addr4, client.Addr4, l.Router.BackendSide4
				if family == "v6" {
					router, clientAddr, routerBack = l.Router.Addr6, client.Addr6, l.Router.BackendSide6
				}
				for _, c := range routingCases {
					if c.port == 81 && family == "v6" {
						c.backend = -1 // the route has IPv4 backends only
					}
					name := fmt.Sprintf("%s/%d/%s", family, c.port, c.name)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					r, err := exchange(ctx, client, addr(router, c.port), c.name, c.tls, 64<<10)
					cancel()
					if !routed(t, l, name, c, r, err) {
						continue
					}
					wantPeer := clientAddr
					if source == "router" {
						wantPeer = routerBack
					}
					if host, _, _ := net.SplitHostPort(r.Peer); host != wantPeer.String() {
						t.Errorf("%s: backend saw %s, want %s", name, r.Peer, wantPeer)
					}
				}
			}
			if s := f.stats(); s["rejected"] != 4 || s["failed"] != 1 || s["backend_fail"] < 1 || s["handover_err"] != 0 {
				t.Errorf("counters: %v", s)
			}
		})
	}
}

func TestAllBackendsRefused(t *testing.T) {
	l := spliceLab(t, 1)
	f := startFalg(t, l, fmt.Sprintf(spliceConfig, "client"))
	defer f.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := exchange(ctx, l.Clients[0], "10.0.0.1:81", "none.example", false, 0)
	if !isReset(err) {
		t.Fatalf("got %v, want a reset", err)
	}
	// The connect timeout is 5s: only the backends' own refusals make it this quick.
	if d := time.Since(start); d > time.Second {
		t.Errorf("reset after %v, want within 1s", d)
	}
	if s := f.stats(); s["failed"] != 1 || s["backend_fail"] != 2 {
		t.Errorf("counters: %v", s)
	}
}

// TestBulk moves 256 MiB each way through one spliced flow, byte-exact, with
// FIN both ways, and checks that falg's queue saw none of it.
func TestBulk(t *testing.T) {
	l := spliceLab(t, 1)
	for _, source := range []string{"client", "router"} {
		t.Run("source="+source, func(t *testing.T) {
			f := startFalg(t, l, fmt.Sprintf(spliceConfig, source))
			defer f.stop()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var mid map[string]int64
			r, err := exchangeWith(ctx, l.Clients[0], "10.0.0.1:80", "a.example", xopts{n: 256 << 20, midway: func() {
				mid = f.stats()
			}})
			if err != nil {
				t.Fatal(err)
			}
			if r.Backend != l.Backends[0].Name {
				t.Errorf("served by %s", r.Backend)
			}
			// falg's SYN-ACK and SYN carry timestamps when the client's
			// SYN did (see nfq's clientOpts), so the spliced flow has them.
			if !r.ClientTS || !r.BackendTS {
				t.Errorf("TCP timestamps: client %t, backend %t; want both", r.ClientTS, r.BackendTS)
			}
			// From the middle of the transfer (long after the hand-over)
			// to its end, including both FINs, falg's queue saw nothing.
			end := f.stats()
			if end["queued"] != mid["queued"] || mid["spliced"] != 1 {
				t.Errorf("counters midway %v, at the end %v", mid, end)
			}
		})
	}
}

// TestClientHelloAcrossSegments: Go's default ClientHello carries an
// X25519MLKEM768 key share and does not fit one segment.
func TestClientHelloAcrossSegments(t *testing.T) {
	l := spliceLab(t, 1)
	f := startFalg(t, l, fmt.Sprintf(spliceConfig, "client"))
	defer f.stop()
	for _, router := range []string{"10.0.0.1:443", "[fd00::1]:443"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var first int
		c, err := l.Clients[0].Dial(ctx, "tcp", router)
		if err != nil {
			t.Fatal(err)
		}
		rec := &firstWrite{Conn: c, n: &first}
		tc := tlsClient(rec, "api-7.b.example")
		if err := tc.HandshakeContext(ctx); err != nil {
			t.Fatalf("%s: handshake: %v", router, err)
		}
		if first <= 1460 {
			t.Errorf("ClientHello was %d bytes: fits one segment, test proves nothing", first)
		}
		if got := tc.ConnectionState().ServerName; got != "api-7.b.example" {
			t.Errorf("server name %q", got)
		}
		tc.Close()
		cancel()
	}
	if s := f.stats(); s["spliced"] != 2 {
		t.Errorf("counters: %v", s)
	}
}

// TestSlowRequest: an HTTP request whose Host comes a while after its
// first line. falg holds both segments; the client's TCP timestamps in them
// differ, and the backend must take both (a SYN from falg carrying the
// later timestamp made the backend drop the earlier segment as old: PAWS).
func TestSlowRequest(t *testing.T) {
	l := spliceLab(t, 1)
	f := startFalg(t, l, fmt.Sprintf(spliceConfig, "client"))
	defer f.stop()
	paws0 := tcpExt(t, l.Backends[0], "PAWSEstab")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few hundred timestamp ticks
	if _, err := io.WriteString(c, "Host: a.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(body), "backend="+l.Backends[0].Name) {
		t.Errorf("answer %q", body)
	}
	if n := tcpExt(t, l.Backends[0], "PAWSEstab") - paws0; n != 0 {
		t.Errorf("the backend dropped %d of the client's segments as old (PAWS); answer after %v", n, time.Since(start))
	}
}

// TestNoTimestamps: a client that does not offer TCP timestamps gets none
// from falg, and neither does the backend. A backend that does not answer
// with them leaves its first client with timestamps falg agreed to before
// it knew the backend: that flow still moves every byte both ways (the
// backend ignores the client's, a Linux client takes segments without
// them), and the service's later clients are not offered them.
func TestNoTimestamps(t *testing.T) {
	for _, side := range []string{"client", "backend"} {
		t.Run(side, func(t *testing.T) {
			l := spliceLab(t, 1)
			without := []*lab.NS{l.Clients[0]}
			if side == "backend" {
				without = l.Backends
			}
			for _, ns := range without {
				run(t, ns, "sysctl", "-qw", "net.ipv4.tcp_timestamps=0")
			}
			f := startFalg(t, l, fmt.Sprintf(spliceConfig, "client"))
			defer f.stop()
			for _, c := range []struct {
				addr string
				tls  bool
			}{{"10.0.0.1:443", true}, {"[fd00::1]:80", false}} {
				for i := range 2 {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					r, err := exchange(ctx, l.Clients[0], c.addr, "a.example", c.tls, 4<<20)
					cancel()
					if err != nil {
						t.Fatalf("%s, connection %d: %v", c.addr, i, err)
					}
					if want := side == "backend" && i == 0; r.ClientTS != want || r.BackendTS {
						t.Errorf("%s, connection %d: TCP timestamps: client %t, backend %t; want client %t, backend false",
							c.addr, i, r.ClientTS, r.BackendTS, want)
					}
				}
			}
		})
	}
}

// tcpExt reads a TcpExt counter of ns's kernel.
func tcpExt(t *testing.T, ns *lab.NS, name string) int64 {
	t.Helper()
	lines := strings.Split(run(t, ns, "cat", "/proc/net/netstat"), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) == 0 || keys[0] != "TcpExt:" || len(keys) != len(vals) {
			continue
		}
		for j, k := range keys {
			if k == name {
				n, err := strconv.ParseInt(vals[j], 10, 64)
				if err != nil {
					t.Fatalf("TcpExt %s: %q", name, vals[j])
				}
				return n
			}
		}
	}
	t.Fatalf("no TcpExt %s in %s", name, ns)
	return 0
}

type firstWrite struct {
	net.Conn
	n *int
}

func (w *firstWrite) Write(b []byte) (int, error) {
	if *w.n == 0 {
		*w.n = len(b)
	}
	return w.Conn.Write(b)
}

// TestConcurrent: 200 connections at once, mixed names, protocols and
// families, each byte-exact to the right backend.
func TestConcurrent(t *testing.T) {
	l := spliceLab(t, 2)
	f := startFalg(t, l, fmt.Sprintf(spliceConfig, "client"))
	defer f.stop()
	cases := []dest{{443, "a.example", true, 0}, {443, "api-3.b.example", true, 1}, {80, "a.example", false, 0}, {80, "y.b.example", false, 1}}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cases[i%len(cases)]
			client := l.Clients[i%2]
			router := l.Router.Addr4
			if i%3 == 0 {
				router = l.Router.Addr6
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r, err := exchange(ctx, client, addr(router, c.port), c.name, c.tls, 64<<10)
			if err == nil && r.Backend != l.Backends[c.backend].Name {
				err = fmt.Errorf("served by %s, want %s", r.Backend, l.Backends[c.backend].Name)
			}
			if err != nil {
				errs <- fmt.Errorf("conn %d (%s %s): %w", i, router, c.name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := f.stats(); s["spliced"] != 200 {
		t.Errorf("spliced %d of 200: %v", s["spliced"], s)
	}
}

// TestKill9DuringTransfer: the flow lives in the kernel, so killing falg
// in the middle of a transfer does not disturb it.
func TestKill9DuringTransfer(t *testing.T) {
	l := spliceLab(t, 1)
	f := startFalg(t, l, fmt.Sprintf(spliceConfig, "router"))
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := exchangeWith(ctx, l.Clients[0], "10.0.0.1:80", "a.example", xopts{n: 32 << 20, pace: 10 * time.Millisecond})
		done <- err
	}()
	f.waitStat("spliced", 1)
	time.Sleep(500 * time.Millisecond)
	f.kill9()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("transfer after kill -9: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("transfer did not finish")
	}
}

// TestCurl: real curl through falg, by SNI and by Host, v4 and v6.
func TestCurl(t *testing.T) {
	l := spliceLab(t, 1)
	f := startFalg(t, l, fmt.Sprintf(spliceConfig, "client"))
	defer f.stop()
	for _, args := range [][]string{
		{"-sk", "--resolve", "a.example:443:10.0.0.1", "https://a.example/"},
		{"-sk", "--resolve", "api-1.b.example:443:[fd00::1]", "https://api-1.b.example/"},
		{"-s", "-H", "Host: a.example", "http://[fd00::1]/"},
		{"-s", "http://x.b.example/", "--resolve", "x.b.example:80:10.0.0.1"},
	} {
		out := run(t, l.Clients[0], "curl", append([]string{"-m", "10"}, args...)...)
		want := l.Backends[0].Name
		if strings.Contains(strings.Join(args, " "), "b.example") {
			want = l.Backends[1].Name
		}
		if !strings.HasPrefix(out, "backend="+want+" peer=") {
			t.Errorf("curl %v: %q, want backend %s", args, out, want)
		}
	}
	out, err := l.Clients[0].Command(context.Background(), "curl", "-sk", "-m", "10", "--resolve", "z.example:4443:10.0.0.1", "https://z.example:4443/").CombinedOutput()
	if err == nil {
		t.Errorf("rejected name: curl succeeded: %s", out)
	}
}
