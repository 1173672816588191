package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"falg/seqnat"
	"falg/test/lab"
)

const failuresConfig = `
workers: 2
max_pending: 8
services:
  - name: http
    listen: ["10.0.0.1:80", "[fd00::1]:80"]
    protocol: http
    timeouts: { first_data: 2s }
    routes:
      - match: ["hold.example"]
        backends: ["10.0.1.2:9000", "[fd00:1::2]:9000"]
    default: ["10.0.1.3:8080", "[fd00:1::3]:8080"]
  - name: tls
    listen: ["10.0.0.1:443", "[fd00::1]:443"]
    protocol: tls
    timeouts: { first_data: 2s }
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:8443", "[fd00:1::2]:8443"]
    default: reject
`

// serveHold answers a request with a header, then either resets the
// connection (request header X-Reset) or reads until the client goes and
// reports how the read ended.
func serveHold(t *testing.T, ns *lab.NS, port int) <-chan error {
	ln, err := ns.Listen("tcp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 16)
	t.Cleanup(lab.Serve(ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		tp := textproto.NewReader(br)
		tp.ReadLine()
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			ended <- err
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Backend: %s\r\n\r\n", ns.Name)
		if h.Get("X-Reset") != "" {
			c.(*net.TCPConn).SetLinger(0)
			return
		}
		_, err = io.Copy(io.Discard, br)
		ended <- err
	}))
	return ended
}

func failuresLab(t *testing.T) (*lab.Lab, *falg, <-chan error) {
	l := lab.Start(t, lab.Options{Clients: 1, Backends: 2})
	ended := serveHold(t, l.Backends[0], 9000)
	for _, b := range l.Backends {
		serve(t, b, 8443, true)
		serve(t, b, 8080, false)
	}
	return l, startFalg(t, l, failuresConfig), ended
}

// TestResetEitherSide: a spliced flow that ends with a RST from the client,
// or from the backend, ends at the other end with a reset too.
func TestResetEitherSide(t *testing.T) {
	l, f, ended := failuresLab(t)
	defer f.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(extra string) (*net.TCPConn, *bufio.Reader) {
		t.Helper()
		c, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:80")
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: hold.example\r\n%s\r\n", extra)
		br := bufio.NewReader(c)
		tp := textproto.NewReader(br)
		if line, err := tp.ReadLine(); err != nil || !strings.Contains(line, "200") {
			t.Fatalf("status %q %v", line, err)
		}
		if h, err := tp.ReadMIMEHeader(); err != nil || h.Get("X-Backend") != l.Backends[0].Name {
			t.Fatalf("header %v %v", h, err)
		}
		return c.(*net.TCPConn), br
	}

	// The kernel's entry must see the RST too (CLOSE, seconds to live), or
	// a router full of reset flows keeps each for the established timeout.
	closed := func(who string, c net.Conn) {
		t.Helper()
		local := c.LocalAddr().String()
		var rows []flowRow
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			rows = listFlows(t, f)
			for _, r := range rows {
				if r.Client == local && r.State == "CLOSE" {
					return
				}
			}
		}
		t.Errorf("%s: conntrack entry of %s not CLOSE: %+v", who, local, rows)
	}
	// When the entry goes, falg's record of the flow goes with it (its
	// destroy event passes falg's filter).
	forgotten := func(who string, c net.Conn) {
		t.Helper()
		orig := seqnat.Tuple{Src: c.LocalAddr().(*net.TCPAddr).AddrPort(), Dst: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
		type record struct{ Client netip.AddrPort }
		recorded := func() bool {
			var recs []record
			if err := f.getJSON("/records", &recs); err != nil {
				t.Fatal(err)
			}
			return slices.ContainsFunc(recs, func(r record) bool { return r.Client == orig.Src })
		}
		if !recorded() {
			t.Fatalf("%s: falg has no record of %s", who, orig.Src)
		}
		if err := l.Router.Do(func() error {
			ct, err := seqnat.Dial()
			if err != nil {
				return err
			}
			defer ct.Close()
			return ct.Delete(unix.IPPROTO_TCP, orig)
		}); err != nil {
			t.Fatalf("%s: delete the entry of %s: %v", who, orig, err)
		}
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if !recorded() {
				return
			}
		}
		t.Errorf("%s: falg still records %s after its entry died", who, orig.Src)
	}

	c, _ := open("")
	c.SetLinger(0)
	c.Close()
	select {
	case err := <-ended:
		if !isReset(err) {
			t.Errorf("client reset: backend's read ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("client reset never reached the backend")
	}
	closed("client reset", c)
	forgotten("client reset", c)

	c, br := open("X-Reset: 1\r\n")
	defer c.Close()
	if _, err := br.ReadByte(); !isReset(err) {
		t.Errorf("backend reset: client's read ended with %v", err)
	}
	closed("backend reset", c)
	forgotten("backend reset", c)
}

// TestBadInput: malformed and oversized first bytes, and a flood of silent
// clients past max_pending, each get a defined outcome, and falg goes on
// serving.
func TestBadInput(t *testing.T) {
	l, f, _ := failuresLab(t)
	defer f.stop()
	client := l.Clients[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send := func(addr string, b []byte) error {
		c, err := client.Dial(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(b)
		_, err = io.ReadAll(c)
		return err
	}

	// Not a ClientHello, on a service that rejects what it cannot route.
	if err := send("10.0.0.1:443", []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")); !isReset(err) {
		t.Errorf("plain HTTP to the TLS listen: %v, want a reset", err)
	}
	// A handshake record claiming more than falg reads.
	if err := send("[fd00::1]:443", []byte{0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xfb}); !isReset(err) {
		t.Errorf("oversized ClientHello: %v, want a reset", err)
	}
	s := f.stats()
	if s["malformed"] != 2 {
		t.Errorf("malformed = %d, want 2: %v", s["malformed"], s)
	}
	// A request without Host goes to the default backends.
	r, err := exchange(ctx, client, "10.0.0.1:80", "", false, 1000)
	if err != nil || r.Backend != l.Backends[1].Name {
		t.Errorf("no Host: %+v %v, want the default backend", r, err)
	}

	// A flood of clients that never send data: falg holds at most
	// max_pending of them; the others are refused; all are freed.
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			if c, err := client.Dial(dctx, "tcp", "10.0.0.1:80"); err == nil {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s = f.stats()
	if s["pending"] > 8 || len(conns) > 8 || s["pending_full"]+int64(20-len(conns)) < 12 {
		t.Errorf("flood: %d connected, counters %v", len(conns), s)
	}
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !isReset(err) {
			t.Errorf("silent flood connection: %v, want a reset after first_data", err)
		}
		c.Close()
	}
	if s := f.stats(); s["pending"] != 0 {
		t.Errorf("pending %d after the flood ended: %v", s["pending"], s)
	}
	// And falg still serves.
	if _, err := exchange(ctx, client, "[fd00::1]:443", "a.example", true, 1<<20); err != nil {
		t.Errorf("after the bad input: %v", err)
	}
}
