package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"falg/protocol"
	"falg/test/lab"
)

// proxiesConfig: services whose clients name their destination, and
// PROXY protocol in both directions. %[1]s is a users file.
const proxiesConfig = `
workers: 2
services:
  - name: connect
    listen: ["10.0.0.1:3128", "[fd00::1]:3128"]
    protocol: connect
    routes:
      - match: ["10.0.1.2:8080", "[fd00:1::2]:8080", "b.example:8080"]
        backends: [requested]
      - match: ["*.a.example:443"]
        backends: ["10.0.1.3:8443"]
    default: reject
  - name: socks
    listen: ["10.0.0.1:1080", "[fd00::1]:1080"]
    protocol: socks5
    routes:
      - match: ["10.0.1.2:8080", "[fd00:1::2]:8080", "b.example:8080"]
        backends: [requested]
    default: reject
  - name: socks-auth
    listen: ["10.0.0.1:1081"]
    protocol: socks5
    users: %[1]s
    routes:
      - match: ["10.0.1.2:8080"]
        backends: [requested]
  - name: instruction
    listen: ["10.0.0.1:7000", "[fd00::1]:7000"]
    protocol: instruction
    routes:
      - match: ["10.0.1.2:8080", "[fd00:1::2]:8080"]
        backends: [requested]
    default: reject
  - name: pp1
    listen: ["10.0.0.1:8001"]
    protocol: http
    proxy_protocol: v1
    default: ["10.0.1.2:9001"]
  - name: pp2
    listen: ["[fd00::1]:8002"]
    protocol: http
    proxy_protocol: v2
    default: ["[fd00:1::2]:9001"]
  - name: behind-lb
    listen: ["10.0.0.1:8080"]
    protocol: http
    accept_proxy: ["10.0.0.0/24"]
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:8080"]
      - match: ["*.b.example"]
        backends: ["10.0.1.3:8080"]
    default: reject
`

// proxiesLab starts the lab, the backends, the router's hosts file (the
// name b.example, for falg's resolver: ip netns exec binds
// /etc/netns/NAME/hosts over /etc/hosts) and falg.
func proxiesLab(t *testing.T) (*lab.Lab, *falg, <-chan protocol.ProxyHeader) {
	l := spliceLab(t, 1)
	headers := servePROXY(t, l.Backends[0], 9001)
	dir := filepath.Join("/etc/netns", l.Router.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte("10.0.1.2 b.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("alice:wonderland\n"), 0o600)
	return l, startFalg(t, l, fmt.Sprintf(proxiesConfig, users)), headers
}

// servePROXY is a backend that reads a PROXY header, reports it, and then
// serves the test protocol with the header's source as the peer.
func servePROXY(t *testing.T, ns *lab.NS, port int) <-chan protocol.ProxyHeader {
	ln, err := ns.Listen("tcp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	headers := make(chan protocol.ProxyHeader, 16)
	t.Cleanup(lab.Serve(ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(time.Minute))
		br := bufio.NewReader(c)
		var buf []byte
		for {
			b, err := br.ReadByte()
			if err != nil {
				return
			}
			buf = append(buf, b)
			h, _, v, _ := protocol.ParseProxyHeader(buf)
			if v == protocol.Malformed {
				return
			}
			if v == protocol.Decided {
				headers <- h
				backendConn(ns.Name, readerConn{c, br}, h.Src.String(), timestamps(c))
				return
			}
		}
	}))
	return headers
}

type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func curl(l *lab.Lab, args ...string) (string, error) {
	out, err := l.Clients[0].Command(context.Background(), "curl", append([]string{"-s", "-m", "10"}, args...)...).CombinedOutput()
	return string(out), err
}

func TestConnectProxy(t *testing.T) {
	l, f, _ := proxiesLab(t)
	defer f.stop()
	b0, b1 := l.Backends[0].Name, l.Backends[1].Name
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-p", "-x", "http://10.0.0.1:3128", "http://10.0.1.2:8080/"}, b0},
		{[]string{"-p", "-x", "http://[fd00::1]:3128", "http://[fd00:1::2]:8080/"}, b0},
		{[]string{"-p", "-x", "http://10.0.0.1:3128", "http://b.example:8080/"}, b0}, // falg resolves the name
		{[]string{"-k", "-p", "-x", "http://10.0.0.1:3128", "https://www.a.example/"}, b1},
	} {
		out, err := curl(l, c.args...)
		if err != nil || !strings.HasPrefix(out, "backend="+c.want) {
			t.Errorf("curl %v: %v %q, want backend %s", c.args, err, out, c.want)
		}
	}
	// Outside the routes: 403, and falg never opens a connection for it.
	out, err := curl(l, "-v", "-p", "-x", "http://10.0.0.1:3128", "http://10.0.1.3:8080/")
	if err == nil || !strings.Contains(out, "403") {
		t.Errorf("unrouted CONNECT: %v %q, want 403", err, out)
	}
	if f.logHas("backend=10.0.1.3:8080") {
		t.Error("falg connected to a destination outside the routes")
	}
	if s := f.stats(); s["rejected"] != 1 || s["spliced"] != 4 {
		t.Errorf("counters: %v", s)
	}
}

func TestSOCKS5(t *testing.T) {
	l, f, _ := proxiesLab(t)
	defer f.stop()
	b0 := l.Backends[0].Name
	for _, args := range [][]string{
		{"-x", "socks5h://10.0.0.1:1080", "http://b.example:8080/"},
		{"--socks5-hostname", "[fd00::1]:1080", "http://[fd00:1::2]:8080/"},
		{"-x", "socks5://10.0.0.1:1080", "http://10.0.1.2:8080/"},
		{"-x", "socks5h://alice:wonderland@10.0.0.1:1081", "http://10.0.1.2:8080/"},
	} {
		out, err := curl(l, args...)
		if err != nil || !strings.HasPrefix(out, "backend="+b0) {
			t.Errorf("curl %v: %v %q", args, err, out)
		}
	}
	for _, args := range [][]string{
		{"-x", "socks5h://10.0.0.1:1080", "http://10.0.1.3:8080/"},             // outside the routes
		{"-x", "socks5h://alice:wrong@10.0.0.1:1081", "http://10.0.1.2:8080/"}, // bad password
		{"-x", "socks5h://10.0.0.1:1081", "http://10.0.1.2:8080/"},             // no credentials
	} {
		if out, err := curl(l, args...); err == nil {
			t.Errorf("curl %v succeeded: %q", args, out)
		}
	}
	if f.logHas("backend=10.0.1.3:8080") {
		t.Error("falg connected to a destination outside the routes")
	}
}

func TestInstruction(t *testing.T) {
	l, f, _ := proxiesLab(t)
	defer f.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []struct{ router, dest string }{
		{"10.0.0.1:7000", "10.0.1.2:8080"},
		{"[fd00::1]:7000", "[fd00:1::2]:8080"},
	} {
		ins, ok := protocol.AppendInstruction(nil, c.dest)
		if !ok {
			t.Fatal("instruction too long")
		}
		// The request follows the instruction in the same write: falg
		// consumes the instruction and hands the rest to the backend.
		r, err := exchangeWith(ctx, l.Clients[0], c.router, "x", xopts{n: 64 << 20, prelude: ins, preludeReply: []byte("00")})
		if err != nil || r.Backend != l.Backends[0].Name {
			t.Errorf("instruction %s: %+v %v", c.dest, r, err)
		}
	}
	// A bad checksum gets 03, then FIN.
	conn, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("1710.0.1.2:808049"))
	if got, err := io.ReadAll(conn); err != nil || string(got) != "03" {
		t.Errorf("bad checksum: %q %v, want 03 and FIN", got, err)
	}
	// A destination outside the routes gets 01.
	ins, _ := protocol.AppendInstruction(nil, "10.0.1.3:8080")
	conn2, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.SetDeadline(time.Now().Add(10 * time.Second))
	conn2.Write(ins)
	if got, err := io.ReadAll(conn2); err != nil || string(got) != "01" {
		t.Errorf("unrouted instruction: %q %v, want 01 and FIN", got, err)
	}
}

func TestPROXYProtocol(t *testing.T) {
	l, f, headers := proxiesLab(t)
	defer f.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		router  string
		version int
	}{{"10.0.0.1:8001", 1}, {"[fd00::1]:8002", 2}} {
		r, err := exchange(ctx, l.Clients[0], c.router, "a.example", false, 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", c.router, err)
		}
		var h protocol.ProxyHeader
		select {
		case h = <-headers:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: backend got no PROXY header", c.router)
		}
		// The backend serves with the header's source as its peer: the
		// exchange's Peer is what the header said, and it must be the
		// client's own address and port.
		host, _, _ := net.SplitHostPort(r.Peer)
		if h.Version != c.version || h.Src.String() != r.Peer || h.Dst.String() != c.router ||
			(host != "10.0.0.2" && host != "fd00::2") {
			t.Errorf("%s: header %+v, peer %s", c.router, h, r.Peer)
		}
	}
}

func TestAcceptPROXY(t *testing.T) {
	l, f, _ := proxiesLab(t)
	defer f.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		header  []byte
		name    string
		backend int
	}{
		{[]byte("PROXY TCP4 192.0.2.7 10.0.0.1 5555 8080\r\n"), "a.example", 0},
		{protocol.AppendProxyV2(nil, netip.MustParseAddrPort("198.51.100.9:4444"), netip.MustParseAddrPort("10.0.0.1:8080")), "x.b.example", 1},
	} {
		r, err := exchangeWith(ctx, l.Clients[0], "10.0.0.1:8080", c.name, xopts{n: 1 << 20, prelude: c.header})
		if err != nil || r.Backend != l.Backends[c.backend].Name {
			t.Errorf("%s: %+v %v", c.name, r, err)
		}
	}
	if !f.logHas("origin=192.0.2.7:5555", "name=a.example") || !f.logHas("origin=198.51.100.9:4444", "name=x.b.example") {
		t.Errorf("the PROXY header's source should be the flow's origin:\n%s", f.out.String())
	}
	// A trusted upstream that sends no header is refused.
	if _, err := exchange(ctx, l.Clients[0], "10.0.0.1:8080", "a.example", false, 10); !isReset(err) {
		t.Errorf("no PROXY header from a trusted upstream: %v, want a reset", err)
	}
}

// TestReplyResent: when a reply falg sends itself is lost on the way to
// the client (the CONNECT 200 after the hand-over, the SOCKS5 method
// selection before the decision), falg sends it again until the client
// acknowledges it.
func TestReplyResent(t *testing.T) {
	l, f, _ := proxiesLab(t)
	defer f.stop()
	// The client's side loses the first data segment from the proxy port.
	lossy := `table inet lossy {
	chain in {
		type filter hook input priority filter; policy accept;
		tcp sport 3128 tcp flags & psh == psh limit rate 1/hour burst 1 packets counter drop
		tcp sport 1080 tcp flags & psh == psh limit rate 1/hour burst 1 packets counter drop
	}
}
`
	cmd := l.Clients[0].Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(lossy)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	for _, args := range [][]string{
		{"-p", "-x", "http://10.0.0.1:3128", "http://10.0.1.2:8080/"},
		{"-x", "socks5h://10.0.0.1:1080", "http://10.0.1.2:8080/"},
	} {
		out, err := curl(l, args...)
		if err != nil || !strings.HasPrefix(out, "backend="+l.Backends[0].Name) {
			t.Errorf("curl %v through a lossy path: %v %q", args, err, out)
		}
	}
	if listing := run(t, l.Clients[0], "nft", "list", "table", "inet", "lossy"); strings.Count(listing, "counter packets 1 ") != 2 {
		t.Errorf("the replies were not lost, the test proves nothing:\n%s", listing)
	}

	// The backend's side loses the PROXY header falg sends it.
	lossy = strings.ReplaceAll(strings.ReplaceAll(lossy, "sport 3128", "dport 9001"), "\t\ttcp sport 1080 tcp flags & psh == psh limit rate 1/hour burst 1 packets counter drop\n", "")
	cmd = l.Backends[0].Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(lossy)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := exchange(ctx, l.Clients[0], "10.0.0.1:8001", "a.example", false, 1<<20); err != nil {
		t.Errorf("PROXY header through a lossy path: %v", err)
	}
	if listing := run(t, l.Backends[0], "nft", "list", "table", "inet", "lossy"); !strings.Contains(listing, "counter packets 1 ") {
		t.Errorf("the header was not lost, the test proves nothing:\n%s", listing)
	}
}
