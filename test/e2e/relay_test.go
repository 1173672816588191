package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"falg/protocol"
	"falg/test/lab"
)

// The relay tests run the relay data plane through falg run; the
// interceptor tests through examples/labeler, which serves the
// `dataplane: relay` services of a falg config with its interceptor.

var labelerBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "falg-e2e-labeler-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "labeler")
	out, err := exec.Command("go", "build", "-o", bin, "falg/examples/labeler").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build labeler: %v: %s", err, out)
	}
	return bin, nil
})

// relayProc is a falg run or labeler process in a lab's router.
type relayProc struct {
	t    testing.TB
	lab  *lab.Lab
	proc *os.Process
	wait func() error
	out  *syncBuffer
}

// startRelay runs falg run on yaml in the router, or with a label the
// labeler, and waits until it serves.
func startRelay(t testing.TB, l *lab.Lab, yaml, label string) *relayProc {
	t.Helper()
	if label == "" {
		f := startFalg(t, l, yaml)
		return &relayProc{t: t, lab: l, proc: f.cmd, wait: f.wait, out: f.out}
	}
	bin, err := labelerBin()
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := writeConfig(t, yaml)
	r := &relayProc{t: t, lab: l, out: &syncBuffer{}}
	cmd := l.Router.Command(context.Background(), bin, "-c", cfg, "-label", label, "-log-level", "debug", "-drain", "1s")
	cmd.Stdout, cmd.Stderr = r.out, r.out
	if err := l.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	r.proc, r.wait = cmd.Process, func() error { return l.Wait(cmd) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", r.out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.out.String(), "ready\n") {
		if time.Now().After(deadline) {
			t.Fatalf("relay did not come up:\n%s", r.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

// stop sends SIGTERM and expects a clean exit.
func (r *relayProc) stop() {
	r.t.Helper()
	r.proc.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.wait() }()
	select {
	case err := <-done:
		if err != nil {
			r.t.Fatalf("relay exited with %v:\n%s", err, r.out.String())
		}
	case <-time.After(10 * time.Second):
		r.t.Fatalf("relay did not stop on SIGTERM:\n%s", r.out.String())
	}
}

// readSyscalls returns the relay process's read system calls (syscr of
// /proc/PID/io): splice(2) is not one, read(2) is.
func (r *relayProc) readSyscalls() int64 {
	r.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", r.proc.Pid))
	if err != nil {
		r.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	r.t.Fatalf("no syscr in %s", b)
	return 0
}

const relayConfig = `
services:
  - name: tls
    listen: ["10.0.0.1:443", "[fd00::1]:443"]
    protocol: tls
    dataplane: relay
    source: %[1]s
    routes:
      - match: ["a.example", "*.a.example"]
        backends: ["10.0.1.2:8443", "[fd00:1::2]:8443"]
    default: ["10.0.1.3:8443", "[fd00:1::3]:8443"]
  - name: http
    listen: ["10.0.0.1:80", "[fd00::1]:80"]
    protocol: http
    dataplane: relay
    source: %[1]s
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:8080", "[fd00:1::2]:8080"]
      - match: ["*.b.example"]
        backends: ["10.0.1.3:8080", "[fd00:1::3]:8080"]
    default: reject
  - name: connect
    listen: ["10.0.0.1:3128"]
    protocol: connect
    dataplane: relay
    source: %[1]s
    routes:
      - match: ["10.0.1.2:8080", "10.0.1.3:8080"]
        backends: [requested]
    default: reject
  - name: socks5
    listen: ["10.0.0.1:1080"]
    protocol: socks5
    dataplane: relay
    source: %[1]s
    routes:
      - match: ["10.0.1.3:8080"]
        backends: [requested]
    default: reject
  - name: instruction
    listen: ["10.0.0.1:7000"]
    protocol: instruction
    dataplane: relay
    source: %[1]s
    routes:
      - match: ["~^10\\.0\\.1\\.[23]:8080$"]
        backends: [requested]
    default: reject
  - name: plain
    listen: ["10.0.0.1:9000"]
    protocol: none
    dataplane: relay
    source: %[1]s
    default: ["10.0.1.2:9000"]
  - name: dns
    listen: ["10.0.0.1:53"]
    protocol: dns
    dataplane: relay
    source: %[1]s
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:5353"]
      - match: ["b.example"]
        backends: ["10.0.1.3:5353"]
    default: reject
`

// serveDNSRcode answers every query on ns:5353 with a response carrying
// rcode (the query echoed, no answers): the tests tell the backends apart
// by it.
func serveDNSRcode(t *testing.T, ns *lab.NS, rcode dnsmessage.RCode) {
	pc, err := ns.ListenPacket("udp", ":5353")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			out, err := protocol.AppendDNSError(nil, buf[:n], rcode)
			if err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
}

// preambleGet connects from client to addr, sends preamble, checks the
// protocol's reply, then sends an HTTP request without X-Bytes and returns
// the backend's one-line body, or the error.
func preambleGet(ctx context.Context, client *lab.NS, addr string, preamble []byte, reply string) (string, error) {
	c, err := client.Dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(preamble); err != nil {
		return "", err
	}
	got := make([]byte, len(reply))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != reply {
		rest, _ := io.ReadAll(c)
		return "", fmt.Errorf("reply %q%q, %v; want %q", got, rest, err, reply)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, _ := strings.Cut(string(resp), "\r\n\r\n")
	return body, nil
}

func socks5Connect(a string, port int) []byte {
	b := []byte{5, 1, 0, 5, 1, 0, 1}
	b = append(b, net.ParseIP(a).To4()...)
	return append(b, byte(port>>8), byte(port))
}

func TestRelayRouting(t *testing.T) {
	l := spliceLab(t, 1)
	serveDNSRcode(t, l.Backends[0], dnsmessage.RCodeNameError)
	serveDNSRcode(t, l.Backends[1], dnsmessage.RCodeServerFailure)
	client := l.Clients[0]
	for _, source := range []string{"client", "router"} {
		t.Run("source="+source, func(t *testing.T) {
			r := startRelay(t, l, fmt.Sprintf(relayConfig, source), "")
			defer r.stop()
			wantPeer := func(family string) string {
				switch {
				case source == "router" && family == "v6":
					return l.Router.BackendSide6.String()
				case source == "router":
					return l.Router.BackendSide4.String()
				case family == "v6":
					return client.Addr6.String()
				}
				return client.Addr4.String()
			}
			// SNI and Host, both families, 1 MiB each way byte-exact.
			for _, family := range []string{"v4", "v6"} {
				router := l.Router.Addr4
				if family == "v6" {
					router = l.Router.Addr6
				}
				for _, c := range routingCases {
					if c.port == 4443 || c.port == 81 {
						continue // services of the splice config only
					}
					name := fmt.Sprintf("%s/%d/%s", family, c.port, c.name)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					res, err := exchange(ctx, client, addr(router, c.port), c.name, c.tls, 1<<20)
					cancel()
					if !routed(t, l, name, c, res, err) {
						continue
					}
					host, _, _ := net.SplitHostPort(res.Peer)
					if source == "router" && host == wantPeer(map[string]string{"v4": "v6", "v6": "v4"}[family]) {
						continue // the relay connects across families with source: router
					}
					if host != wantPeer(family) {
						t.Errorf("%s: backend saw %s, want %s", name, res.Peer, wantPeer(family))
					}
				}
			}
			// Protocols that name their destination.
			instr2, _ := protocol.AppendInstruction(nil, "10.0.1.2:8080")
			instrBad, _ := protocol.AppendInstruction(nil, "10.0.1.4:8080")
			for _, c := range []struct {
				name     string
				port     int
				preamble []byte
				reply    string
				backend  int // -1: refused with the reply
			}{
				{"connect", 3128, []byte("CONNECT 10.0.1.3:8080 HTTP/1.1\r\nHost: 10.0.1.3:8080\r\n\r\n"), "HTTP/1.1 200 Connection established\r\n\r\n", 1},
				{"connect refused", 3128, []byte("CONNECT 10.0.1.9:8080 HTTP/1.1\r\n\r\n"), "HTTP/1.1 403 Forbidden", -1},
				{"socks5", 1080, socks5Connect("10.0.1.3", 8080), "\x05\x00\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00", 1},
				{"socks5 refused", 1080, socks5Connect("10.0.1.2", 8080), "\x05\x00\x05\x02", -1},
				{"instruction", 7000, instr2, "00", 0},
				{"instruction refused", 7000, instrBad, "01", -1},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				body, err := preambleGet(ctx, client, addr(l.Router.Addr4, c.port), c.preamble, c.reply)
				cancel()
				switch {
				case err != nil:
					t.Errorf("%s: %v", c.name, err)
				case c.backend < 0 && body != "":
					t.Errorf("%s: got %q after the refusal", c.name, body)
				case c.backend >= 0:
					want := fmt.Sprintf("backend=%s peer=%s:", l.Backends[c.backend].Name, wantPeer("v4"))
					if !strings.HasPrefix(body, want) {
						t.Errorf("%s: body %q, want %q...", c.name, body, want)
					}
				}
			}
			// DNS over UDP: each query by its own name, from one client port.
			pc, err := client.ListenPacket("udp", ":0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			dst := &net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 53}
			for i, c := range []struct {
				name  string
				rcode dnsmessage.RCode
			}{
				{"www.a.example.", dnsmessage.RCodeNameError},   // backend0
				{"x.b.example.", dnsmessage.RCodeServerFailure}, // backend1, same client port
				{"c.example.", dnsmessage.RCodeRefused},         // no route: falg answers
				{"a.example.", dnsmessage.RCodeNameError},       // backend0 again
			} {
				b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: uint16(7 + i), RecursionDesired: true})
				b.StartQuestions()
				b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(c.name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
				q, _ := b.Finish()
				pc.SetDeadline(time.Now().Add(3 * time.Second))
				pc.WriteTo(q, dst)
				buf := make([]byte, 512)
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					t.Errorf("dns %s: %v", c.name, err)
					continue
				}
				var p dnsmessage.Parser
				h, err := p.Start(buf[:n])
				if err != nil || h.ID != uint16(7+i) || h.RCode != c.rcode || from.String() != dst.String() {
					t.Errorf("dns %s: %+v from %s, %v; want id %d rcode %v from %s", c.name, h, from, err, 7+i, c.rcode, dst)
				}
			}
		})
	}
}

// TestRelayBulk moves 256 MiB each way through one relayed flow,
// byte-exact, with the client half-closing first (the backend's hash still
// arrives), and checks that the relay spliced: its read(2) calls stay far
// below what a user-space copy of 512 MiB needs (16384 with 32 KiB reads).
func TestRelayBulk(t *testing.T) {
	l := spliceLab(t, 1)
	r := startRelay(t, l, fmt.Sprintf(relayConfig, "client"), "")
	defer r.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	reads0 := r.readSyscalls()
	res, err := exchangeWith(ctx, l.Clients[0], "10.0.0.1:80", "a.example", xopts{n: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	reads := r.readSyscalls() - reads0
	if res.Backend != l.Backends[0].Name {
		t.Errorf("served by %s", res.Backend)
	}
	t.Logf("relay read(2) calls for 512 MiB: %d", reads)
	if reads > 1000 {
		t.Errorf("relay made %d read calls for 512 MiB: not spliced", reads)
	}
}

// TestRelayReset: a reset on either side reaches the other.
func TestRelayReset(t *testing.T) {
	l := lab.Start(t, lab.Options{Clients: 1, Backends: 1})
	ln, err := l.Backends[0].Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := startRelay(t, l, fmt.Sprintf(relayConfig, "client"), "")
	defer r.stop()
	for _, resetter := range []string{"client", "backend"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:9000")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		b, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("x"))
		io.ReadFull(b, make([]byte, 1))
		resetting, other := c, b
		if resetter == "backend" {
			resetting, other = b, c
		}
		resetting.(*net.TCPConn).SetLinger(0)
		resetting.Close()
		_, err = io.ReadAll(other)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s reset: the other side got %v, want a reset", resetter, err)
		}
		other.Close()
	}
}

// TestRelayTransparent: with listen *:443 a client connecting to any
// address on port 443 is relayed by SNI and the backend sees the client's
// own address; after the relay exits no nft table, ip rule or route is
// left.
func TestRelayTransparent(t *testing.T) {
	l := spliceLab(t, 1)
	const cfg = `
services:
  - name: any
    listen: ["*:443"]
    protocol: tls
    dataplane: relay
    source: client
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:8443", "[fd00:1::2]:8443"]
    default: ["10.0.1.3:8443", "[fd00:1::3]:8443"]
`
	r := startRelay(t, l, cfg, "")
	leftovers := func() []string {
		var left []string
		if out, err := l.Router.Run(context.Background(), "nft", "list", "tables"); err != nil || strings.Contains(string(out), "falg_relay") {
			left = append(left, fmt.Sprintf("nft tables: %q %v", out, err))
		}
		for _, fam := range []string{"-4", "-6"} {
			if out := run(t, l.Router, "ip", fam, "rule", "show"); strings.Contains(out, "fwmark") {
				left = append(left, "ip "+fam+" rule: "+out)
			}
			if out := run(t, l.Router, "ip", fam, "route", "show", "table", "4010"); strings.TrimSpace(out) != "" {
				left = append(left, "ip "+fam+" route table 4010: "+out)
			}
		}
		return left
	}
	if left := leftovers(); len(left) != 5 {
		t.Fatalf("while running, want the table, 2 rules and 2 routes; got %d: %q", len(left), left)
	}
	client := l.Clients[0]
	for _, c := range []struct {
		dst, name string
		backend   int
		peer      string
	}{
		{"192.0.2.7:443", "a.example", 0, client.Addr4.String()},
		{"10.0.1.3:443", "other.example", 1, client.Addr4.String()},
		{"[2001:db8::7]:443", "a.example", 0, client.Addr6.String()},
		{"[fd00:1::2]:443", "z.example", 1, client.Addr6.String()},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := exchange(ctx, client, c.dst, c.name, true, 256<<10)
		cancel()
		if err != nil {
			t.Errorf("%s %s: %v", c.dst, c.name, err)
			continue
		}
		host, _, _ := net.SplitHostPort(res.Peer)
		if res.Backend != l.Backends[c.backend].Name || host != c.peer {
			t.Errorf("%s %s: served by %s seeing %s; want %s seeing %s", c.dst, c.name, res.Backend, res.Peer, l.Backends[c.backend].Name, c.peer)
		}
	}
	r.stop()
	if left := leftovers(); len(left) > 0 {
		t.Errorf("after exit: %q", left)
	}
}

// TestRelayLabeler: the example interceptor appends its label to every
// chunk both ways, so an echo returns "hello" + label + label.
func TestRelayLabeler(t *testing.T) {
	l := lab.Start(t, lab.Options{Clients: 1, Backends: 1})
	ln, err := l.Backends[0].Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	r := startRelay(t, l, fmt.Sprintf(relayConfig, "router"), "[L]")
	defer r.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	reads0 := r.readSyscalls()
	for _, msg := range []string{"hello", "world"} {
		c.Write([]byte(msg))
		want := msg + "[L][L]"
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
			t.Fatalf("echo of %q: %q, %v; want %q", msg, got, err, want)
		}
	}
	// An intercepted flow is copied through user space: one read(2) per
	// chunk at least (the contrast to TestRelayBulk's spliced flow).
	if reads := r.readSyscalls() - reads0; reads < 4 {
		t.Errorf("intercepted flow: %d read calls for 4 chunks", reads)
	}
}
