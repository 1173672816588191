package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"falg/config"
	"falg/protocol"
	"falg/test/lab"
)

// backend listens on addr, writes "<name> <peer>\n" to each connection and
// then echoes what it reads until EOF, then half-closes.
func backend(t *testing.T, addr, name string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Serve(ln, func(c net.Conn) {
		fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	}))
}

const testConfig = `
services:
  - name: tls
    listen: ["127.0.0.1:%[1]d"]
    protocol: tls
    dataplane: relay
    source: router
    routes:
      - match: ["a.example"]
        backends: ["127.0.0.2:%[2]d"]
    default: ["127.0.0.3:%[2]d"]
  - name: http
    listen: ["127.0.0.1:%[3]d"]
    protocol: http
    dataplane: relay
    source: router
    proxy_protocol: v1
    routes:
      - match: ["*.b.example"]
        backends: ["127.0.0.3:%[2]d"]
    default: reject
  - name: connect
    listen: ["127.0.0.1:%[4]d"]
    protocol: connect
    dataplane: relay
    source: router
    routes:
      - match: ["127.0.0.2:%[2]d", "127.0.0.9:9"]
        backends: [requested]
    default: reject
  - name: socks5
    listen: ["127.0.0.1:%[5]d"]
    protocol: socks5
    dataplane: relay
    source: router
    routes:
      - match: ["127.0.0.3:%[2]d"]
        backends: [requested]
    default: reject
  - name: instruction
    listen: ["127.0.0.1:%[6]d"]
    protocol: instruction
    dataplane: relay
    source: router
    routes:
      - match: ["~^127\\.0\\.0\\.[0-9]+:[0-9]+$"]
        backends: [requested]
    default: reject
  - name: dns
    listen: ["127.0.0.1:%[7]d"]
    protocol: dns
    dataplane: relay
    source: router
    routes:
      - match: ["a.example"]
        backends: ["127.0.0.2:%[8]d"]
    default: reject
`

// ports are distinct free ports for one test.
func ports(t *testing.T, n int) []any {
	var out []any
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

type testRelay struct {
	srv  *Server
	port []any // tls, backend, http, connect, socks5, instruction, dns, dns backend
}

func startRelay(t *testing.T, o Options) *testRelay {
	t.Helper()
	p := ports(t, 8)
	c, err := config.LoadBytes([]byte(fmt.Sprintf(testConfig, p...)))
	if err != nil {
		t.Fatal(err)
	}
	if o.Drain == 0 {
		o.Drain = time.Second
	}
	s, err := New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	backend(t, fmt.Sprintf("127.0.0.2:%d", p[1]), "b2")
	backend(t, fmt.Sprintf("127.0.0.3:%d", p[1]), "b3")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return &testRelay{srv: s, port: p}
}

// clientHello returns the first bytes a crypto/tls client sends for sni.
func clientHello(t *testing.T, sni string) []byte {
	a, b := net.Pipe()
	go func() {
		tc := tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		tc.Handshake()
	}()
	buf := make([]byte, 16<<10)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	return buf[:n]
}

func socks5Request(host string, port int) []byte {
	b := []byte{5, 1, 0, 5, 1, 0, 1}
	b = append(b, net.ParseIP(host).To4()...)
	return append(b, byte(port>>8), byte(port))
}

func TestRelayRouting(t *testing.T) {
	r := startRelay(t, Options{})
	bp := r.port[1].(int)
	instr, _ := protocol.AppendInstruction(nil, fmt.Sprintf("127.0.0.3:%d", bp))
	cases := []struct {
		name    string
		port    any
		first   []byte
		reply   string // protocol reply before the backend's bytes
		backend string // "" = refused
		refusal string // what a refused client reads
		echo    bool   // the backend gets (and echoes) the first bytes
		proxyV1 bool
	}{
		{name: "sni exact", port: r.port[0], first: clientHello(t, "a.example"), backend: "b2", echo: true},
		{name: "sni default", port: r.port[0], first: clientHello(t, "other.example"), backend: "b3", echo: true},
		{name: "host wildcard", port: r.port[2], first: []byte("GET / HTTP/1.1\r\nHost: x.b.example\r\n\r\n"), backend: "b3", echo: true, proxyV1: true},
		{name: "host rejected", port: r.port[2], first: []byte("GET / HTTP/1.1\r\nHost: nope.example\r\n\r\n")},
		{name: "connect", port: r.port[3], first: []byte(fmt.Sprintf("CONNECT 127.0.0.2:%d HTTP/1.1\r\n\r\n", bp)), reply: "HTTP/1.1 200 Connection established\r\n\r\n", backend: "b2"},
		{name: "connect refused", port: r.port[3], first: []byte("CONNECT 127.0.0.9:9 HTTP/1.1\r\n\r\n"), refusal: "HTTP/1.1 502 Bad Gateway"},
		{name: "connect not allowed", port: r.port[3], first: []byte("CONNECT 127.0.0.7:9 HTTP/1.1\r\n\r\n"), refusal: "HTTP/1.1 403 Forbidden"},
		{name: "socks5", port: r.port[4], first: socks5Request("127.0.0.3", bp), reply: "\x05\x00\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00", backend: "b3"},
		{name: "socks5 not allowed", port: r.port[4], first: socks5Request("127.0.0.2", bp), refusal: "\x05\x00\x05\x02"},
		{name: "instruction", port: r.port[5], first: instr, reply: "00", backend: "b3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.port))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(c.first); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			if c.backend == "" {
				got, err := io.ReadAll(br)
				if c.refusal == "" {
					if !errors.Is(err, syscall.ECONNRESET) {
						t.Fatalf("got %q, %v; want a reset", got, err)
					}
					return
				}
				if err != nil || !strings.HasPrefix(string(got), c.refusal) {
					t.Fatalf("got %q, %v; want %q and a FIN", got, err, c.refusal)
				}
				return
			}
			reply := make([]byte, len(c.reply))
			if _, err := io.ReadFull(br, reply); err != nil || string(reply) != c.reply {
				t.Fatalf("reply %q, %v; want %q", reply, err, c.reply)
			}
			line, err := br.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, c.backend+" 127.0.0.1:") {
				t.Fatalf("backend line %q, %v; want %s", line, err, c.backend)
			}
			var want []byte
			if c.proxyV1 {
				want = append(want, fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", conn.LocalAddr().(*net.TCPAddr).Port, c.port)...)
			}
			if c.echo {
				want = append(want, c.first...)
			}
			want = append(want, "after the decision"...)
			conn.Write([]byte("after the decision"))
			conn.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(br)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("echo %q, %v; want %q", got, err, want)
			}
		})
	}
	if s := r.srv.Stats(); s.Relayed.Load() != 6 || s.Rejected.Load() != 3 || s.Failed.Load() != 1 {
		t.Errorf("stats %v", s.Map())
	}
}

func TestRelayInterceptor(t *testing.T) {
	var mu sync.Mutex
	var flows []Flow
	ic := InterceptorFunc(func(f *Flow) Hook {
		mu.Lock()
		flows = append(flows, *f)
		mu.Unlock()
		var out [2][]byte
		return HookFunc(func(dir Direction, b []byte) ([]byte, error) {
			out[dir] = append(append(out[dir][:0], b...), '<', byte('0'+dir), '>')
			return out[dir], nil
		})
	})
	r := startRelay(t, Options{Interceptor: ic})
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port[2]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: x.b.example\r\n\r\n"
	conn.Write([]byte(req))
	br := bufio.NewReader(conn)
	hdr := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", conn.LocalAddr().(*net.TCPAddr).Port, r.port[2])
	// Toward the backend the request is one chunk: labelled <0> once.
	// Toward the client the greeting and the echo may come in one or
	// several chunks: each ends in <1>.
	conn.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(rest), "<1>") {
		t.Fatalf("stream does not end with the to-client label: %q", rest)
	}
	got := strings.ReplaceAll(string(rest), "<1>", "")
	greeting, echo, _ := strings.Cut(got, "\n")
	if want := hdr + req + "<0>"; !strings.HasPrefix(greeting, "b3 ") || echo != want {
		t.Fatalf("stream without to-client labels %q, want greeting and %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(flows) != 1 || flows[0].Name != "x.b.example" || flows[0].Service != "http" || flows[0].Backend.Addr().String() != "127.0.0.3" {
		t.Fatalf("flows %+v", flows)
	}
	if n := r.srv.Stats().Intercepted.Load(); n != 1 {
		t.Errorf("intercepted %d", n)
	}
}

// plainRelay returns two free ports, a backend listener on 127.0.0.2 at
// the second, and a config relaying 127.0.0.1 at the first to it
// (protocol none, source router). The listener closes with the test.
func plainRelay(t *testing.T) ([]any, net.Listener, *config.Config) {
	t.Helper()
	p := ports(t, 2)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", p[1]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := config.LoadBytes([]byte(fmt.Sprintf(`
services:
  - name: plain
    listen: ["127.0.0.1:%d"]
    protocol: none
    dataplane: relay
    source: router
    default: ["127.0.0.2:%d"]
`, p...)))
	if err != nil {
		t.Fatal(err)
	}
	return p, ln, c
}

// TestRelayHalfCloseAndReset: a client that half-closes still gets the
// backend's bytes; a client reset resets the backend.
func TestRelayHalfCloseAndReset(t *testing.T) {
	p, ln, c := plainRelay(t)
	s, err := New(c, Options{Drain: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	addr := fmt.Sprintf("127.0.0.1:%d", p[0])

	// Half-close: the client sends and closes its side; the backend reads
	// EOF, then answers, and the client reads it all.
	cl, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cl.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.SetDeadline(time.Now().Add(5 * time.Second))
	cl.Write([]byte("question"))
	cl.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "question" {
		t.Fatalf("backend read %q, %v", got, err)
	}
	answer := bytes.Repeat([]byte("answer"), 100000)
	go func() {
		b.Write(answer)
		b.Close()
	}()
	got, err = io.ReadAll(cl)
	if err != nil || !bytes.Equal(got, answer) {
		t.Fatalf("client read %d bytes, %v; want %d", len(got), err, len(answer))
	}

	// Reset: the client resets, the backend sees a reset.
	cl2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	b2.SetDeadline(time.Now().Add(5 * time.Second))
	cl2.Write([]byte("x"))
	buf := make([]byte, 1)
	io.ReadFull(b2, buf)
	cl2.(*net.TCPConn).SetLinger(0)
	cl2.Close()
	_, err = io.ReadAll(b2)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("backend after client reset: %v, want a reset", err)
	}
	if s.Stats().Resets.Load() != 1 {
		t.Errorf("stats %v", s.Stats().Map())
	}
}

func TestRelayIdleAndDrain(t *testing.T) {
	p, ln, c := plainRelay(t)
	s, err := New(c, Options{Idle: 400 * time.Millisecond, Drain: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", p[0])
	cl, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	b, _ := ln.Accept()
	defer b.Close()
	start := time.Now()
	cl.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(cl)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("idle flow: %v, want a reset", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 2*time.Second {
		t.Errorf("idle reset after %v, want about 400ms", d)
	}
	if s.Stats().Idle.Load() != 1 {
		t.Errorf("stats %v", s.Stats().Map())
	}

	// Drain: an open flow is closed at the drain deadline, and the
	// listener is gone at once.
	cl2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	b2, _ := ln.Accept()
	defer b2.Close()
	start = time.Now()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("shutdown took %v, want the 300ms drain", d)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("relay still accepts after Shutdown")
	}
	cl2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(cl2); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("drained flow: %v", err)
	}
}

func TestRelayDNS(t *testing.T) {
	r := startRelay(t, Options{UDPIdle: 300 * time.Millisecond})
	pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.2:%d", r.port[7]))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() { // answers each query with its own bytes, QR set
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			buf[2] |= 0x80
			pc.WriteTo(buf[:n], from)
		}
	}()
	cl, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", r.port[6]))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	query := func(id uint16, name string) (dnsmessage.Header, error) {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
		b.StartQuestions()
		b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
		msg, _ := b.Finish()
		cl.SetDeadline(time.Now().Add(3 * time.Second))
		cl.Write(msg)
		buf := make([]byte, 512)
		n, err := cl.Read(buf)
		if err != nil {
			return dnsmessage.Header{}, err
		}
		var p dnsmessage.Parser
		return p.Start(buf[:n])
	}
	for i, c := range []struct {
		name  string
		rcode dnsmessage.RCode
	}{
		{"www.a.example.", dnsmessage.RCodeSuccess}, // zone a.example: the backend echoes
		{"nope.example.", dnsmessage.RCodeRefused},  // no route: falg answers
		{"a.example.", dnsmessage.RCodeSuccess},     // same client port, routed again
	} {
		h, err := query(uint16(100+i), c.name)
		if err != nil || h.ID != uint16(100+i) || !h.Response || h.RCode != c.rcode {
			t.Errorf("%s: %+v, %v; want id %d rcode %v", c.name, h, err, 100+i, c.rcode)
		}
	}
	st := r.srv.Stats()
	if st.Datagrams.Load() != 2 || st.Replies.Load() != 2 || st.UDPRejected.Load() != 1 || st.Sessions.Load() != 1 {
		t.Errorf("stats %v", st.Map())
	}
	deadline := time.Now().Add(3 * time.Second)
	for st.Sessions.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st.Sessions.Load() != 0 {
		t.Errorf("session not expired: %v", st.Map())
	}
}
