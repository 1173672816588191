package protocol

import (
	"errors"
	"os"
	"testing"
)

type ext struct {
	typ  int
	data []byte
}

func u16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

func sniExt(names ...string) ext {
	var list []byte
	for _, n := range names {
		list = append(list, 0)
		list = append(list, u16(len(n))...)
		list = append(list, n...)
	}
	return ext{extServerName, append(u16(len(list)), list...)}
}

func alpnExt(protos ...string) ext {
	var list []byte
	for _, p := range protos {
		list = append(list, byte(len(p)))
		list = append(list, p...)
	}
	return ext{extALPN, append(u16(len(list)), list...)}
}

// helloMsg builds a ClientHello handshake message (with its 4-byte header).
func helloMsg(exts ...ext) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)    // random
	body = append(body, 32)                     // session id
	body = append(body, make([]byte, 32)...)    //
	body = append(body, 0, 4, 0x13, 1, 0x13, 2) // cipher suites
	body = append(body, 1, 0)                   // compression
	if exts != nil {
		var e []byte
		for _, x := range exts {
			e = append(e, u16(x.typ)...)
			e = append(e, u16(len(x.data))...)
			e = append(e, x.data...)
		}
		body = append(body, u16(len(e))...)
		body = append(body, e...)
	}
	n := len(body)
	return append([]byte{1, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// records wraps msg in handshake records of at most size bytes each.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1)
		out = append(out, u16(n)...)
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func TestTLSRealClientHellos(t *testing.T) {
	tests := []struct {
		file, name, alpn string
		minLen           int
		mlkem            bool
	}{
		{"clienthello-go.bin", "go.falg.test", "h2", 1200, true},
		{"clienthello-curl.bin", "curl.falg.test", "h2", 300, false},
		{"clienthello-openssl.bin", "openssl.falg.test", "http/1.1", 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < tt.minLen {
				t.Fatalf("capture has %d bytes, want >= %d", len(b), tt.minLen)
			}
			if tt.mlkem && !offersGroup(t, b, 0x11ec) {
				t.Fatalf("capture does not offer X25519MLKEM768")
			}
			// Every split point: the first segment alone, then the rest.
			p := &tlsParser{}
			for k := 0; k < len(b); k++ {
				p.Reset()
				if d := p.Feed(b[:k]); d.Verdict != NeedMore {
					t.Fatalf("prefix %d: %v %v, want NeedMore", k, d.Verdict, d.Err)
				}
				d := p.Feed(b)
				if d.Verdict != Decided || d.Name != tt.name || d.ALPN != tt.alpn || d.Consume != 0 {
					t.Fatalf("split at %d: %+v, want Decided %q %q", k, d, tt.name, tt.alpn)
				}
			}
			// Re-fragmented into many records, fed byte by byte.
			msg := b[5:]
			for _, size := range []int{1, 2, 3, 5, 64, 512, 1000} {
				stream := records(msg, size)
				if len(stream) > MaxFirstBytes {
					continue
				}
				if err := checkConsistent("tls", mustNew("tls", Options{}), stream); err != nil {
					t.Fatalf("records of %d: %v", size, err)
				}
				d := feedWhole(&tlsParser{}, stream).d
				if d.Verdict != Decided || d.Name != tt.name || d.ALPN != tt.alpn {
					t.Fatalf("records of %d: %+v", size, d)
				}
			}
		})
	}
}

// offersGroup reports whether the ClientHello record b has a key share for
// group.
func offersGroup(t *testing.T, b []byte, group int) bool {
	t.Helper()
	ch := b[9:]
	sid := int(ch[34])
	ch = ch[35+sid:]
	ch = ch[2+be16(ch):]
	ch = ch[1+int(ch[0]):]
	ch = ch[2:]
	for len(ch) >= 4 {
		typ, n := be16(ch), be16(ch[2:])
		data := ch[4 : 4+n]
		ch = ch[4+n:]
		if typ != 51 { // key_share
			continue
		}
		data = data[2:]
		for len(data) >= 4 {
			g, l := be16(data), be16(data[2:])
			if g == group {
				return true
			}
			data = data[4+l:]
		}
	}
	return false
}

func TestTLS(t *testing.T) {
	good := records(helloMsg(sniExt("Example.COM."), alpnExt("h2", "http/1.1")), 1<<14)
	big := helloMsg(sniExt("big.example"), ext{0xfe0d, make([]byte, 12000)})
	tests := []struct {
		name   string
		stream []byte
		want   Verdict
		host   string
		alpn   string
		err    error
	}{
		{"sni and alpn", good, Decided, "example.com", "h2", nil},
		{"trailing data ignored", append(append([]byte{}, good...), 0x14, 3, 3, 0, 1, 1), Decided, "example.com", "h2", nil},
		{"no extensions", records(helloMsg(), 100), Decided, "", "", nil},
		{"no sni", records(helloMsg(alpnExt("http/1.1")), 1<<14), Decided, "", "http/1.1", nil},
		{"sni non-host_name entry first", records(helloMsg(ext{0, []byte{0, 8, 7, 0, 1, 'x', 0, 0, 1, 'a'}}), 99), Decided, "a", "", nil},
		{"odd alpn", records(helloMsg(sniExt("a.b"), alpnExt("weird/9")), 50), Decided, "a.b", "weird/9", nil},
		{"multi-record big", records(big, 1<<14), Decided, "big.example", "", nil},
		{"multi-record 100", records(big, 100), Decided, "big.example", "", nil},
		{"last record runs past MaxFirstBytes", longLastRecord(big, 1000), Decided, "big.example", "", nil},
		{"empty", nil, NeedMore, "", "", nil},
		{"header only", good[:5], NeedMore, "", "", nil},
		{"application data", []byte{0x17, 3, 3, 0, 5}, Malformed, "", "", ErrNotTLS},
		{"http", []byte("GET / HTTP/1.1\r\n"), Malformed, "", "", ErrNotTLS},
		{"sslv2 style", []byte{0x80, 0x2e, 1, 3, 1}, Malformed, "", "", ErrNotTLS},
		{"bad major version", []byte{22, 2, 0, 0, 5}, Malformed, "", "", ErrNotTLS},
		{"zero record", []byte{22, 3, 1, 0, 0}, Malformed, "", "", ErrSyntax},
		{"record too long", []byte{22, 3, 1, 0x40, 1}, Malformed, "", "", ErrSyntax},
		{"server hello", records([]byte{2, 0, 0, 40}, 100), Malformed, "", "", ErrNotTLS},
		{"oversized hello", []byte{22, 3, 1, 0x40, 0, 1, 0, 0x40, 0}, Malformed, "", "", ErrTooLarge},
		{"ccs between fragments", append(records(good[5:50], 100), 20, 3, 3, 0, 1, 1), Malformed, "", "", ErrNotTLS},
		{"bad sni chars", records(helloMsg(sniExt("a b.com")), 1000), Malformed, "", "", ErrBadName},
		{"sni empty", records(helloMsg(sniExt("")), 1000), Malformed, "", "", ErrSyntax},
		{"sni label too long", records(helloMsg(sniExt(string(make64('a')))), 1000), Malformed, "", "", ErrBadName},
		{"sni list length", records(helloMsg(ext{0, []byte{0, 9, 0, 0, 1, 'a'}}), 1000), Malformed, "", "", ErrSyntax},
		{"sni entry overrun", records(helloMsg(ext{0, []byte{0, 4, 0, 0, 9, 'a'}}), 1000), Malformed, "", "", ErrSyntax},
		{"duplicate sni", records(helloMsg(sniExt("a"), sniExt("b")), 1000), Malformed, "", "", ErrSyntax},
		{"alpn empty proto", records(helloMsg(ext{16, []byte{0, 1, 0}}), 1000), Malformed, "", "", ErrSyntax},
		{"extension overrun", records(fixLen(append(helloMsg(sniExt("a")), 0, 5)), 1000), Malformed, "", "", ErrSyntax},
		{"odd cipher suites", records(setByte(helloMsg(), 4+2+32+1+32+1, 3), 1000), Malformed, "", "", ErrSyntax},
		{"session id too long", records(setByte(helloMsg(), 4+2+32, 33), 1000), Malformed, "", "", ErrSyntax},
		{"short body", records([]byte{1, 0, 0, 3, 3, 3, 0}, 1000), Malformed, "", "", ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := feedWhole(&tlsParser{}, tt.stream).d
			if d.Verdict != tt.want || d.Name != tt.host || d.ALPN != tt.alpn {
				t.Fatalf("got %v %q %q (%v), want %v %q %q", d.Verdict, d.Name, d.ALPN, d.Err, tt.want, tt.host, tt.alpn)
			}
			if tt.err != nil && !errors.Is(d.Err, tt.err) {
				t.Fatalf("error %v, want %v", d.Err, tt.err)
			}
			if err := checkConsistent("tls", mustNew("tls", Options{}), tt.stream); err != nil {
				t.Fatal(err)
			}
			if tt.want == Decided {
				// Truncated at every byte: NeedMore.
				p := &tlsParser{}
				for k := 0; k < decidedAt(tt.stream); k++ {
					if d := p.Feed(tt.stream[:k]); d.Verdict != NeedMore {
						t.Fatalf("prefix %d: %v %v", k, d.Verdict, d.Err)
					}
				}
			}
		})
	}
}

// longLastRecord puts msg[:head] in records of 100 bytes and the rest in a
// record of the largest length, which ends past MaxFirstBytes and, in the
// returned stream, has not arrived beyond the message.
func longLastRecord(msg []byte, head int) []byte {
	s := records(msg[:head], 100)
	s = append(s, recordTypeHandshake, 3, 1, maxRecordLen>>8, maxRecordLen&0xff)
	return append(s, msg[head:]...)
}

// decidedAt returns the length of the records holding the ClientHello.
func decidedAt(stream []byte) int {
	ch, _, _ := ParseClientHello(stream, nil)
	return min(ch.Length, len(stream))
}

func make64(c byte) []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return b
}

func setByte(b []byte, i int, v byte) []byte { b[i] = v; return b }

// fixLen rewrites a handshake message's length after appending to it.
func fixLen(m []byte) []byte {
	n := len(m) - 4
	m[1], m[2], m[3] = byte(n>>16), byte(n>>8), byte(n)
	return m
}

func TestTLSTooLarge(t *testing.T) {
	// A ClientHello that would need more than MaxFirstBytes.
	msg := helloMsg(sniExt("a.example"), ext{0xfe0d, make([]byte, MaxFirstBytes)})
	stream := records(msg, 1<<14)[:MaxFirstBytes]
	d := feedWhole(&tlsParser{}, stream).d
	if d.Verdict != Malformed || !errors.Is(d.Err, ErrTooLarge) {
		t.Fatalf("got %v %v, want Malformed ErrTooLarge", d.Verdict, d.Err)
	}
	// Tiny records: the stream reaches MaxFirstBytes before the message ends.
	msg = helloMsg(sniExt("a.example"), ext{0xfe0d, make([]byte, 12000)})
	stream = records(msg, 10)
	d = feedWhole(&tlsParser{}, stream[:MaxFirstBytes]).d
	if d.Verdict != Malformed || !errors.Is(d.Err, ErrTooLarge) {
		t.Fatalf("tiny records: got %v %v, want Malformed ErrTooLarge", d.Verdict, d.Err)
	}
	// Known before MaxFirstBytes arrive: each record adds a header, and at
	// this rate the message cannot end in time.
	if d := feedWhole(&tlsParser{}, stream[:14000]).d; d.Verdict != Malformed || !errors.Is(d.Err, ErrTooLarge) {
		t.Fatalf("tiny records, 14000 bytes: got %v %v, want Malformed ErrTooLarge", d.Verdict, d.Err)
	}
}

func TestTLSNoAllocs(t *testing.T) {
	b, err := os.ReadFile("testdata/clienthello-go.bin")
	if err != nil {
		t.Fatal(err)
	}
	frag := records(b[5:], 300)
	scratch := make([]byte, 0, MaxFirstBytes)
	for _, s := range [][]byte{b, frag} {
		n := testing.AllocsPerRun(100, func() {
			ch, v, _ := ParseClientHello(s, scratch)
			if v != Decided || string(ch.ServerName) != "go.falg.test" {
				t.Fatal("not decided")
			}
		})
		if n != 0 {
			t.Fatalf("ParseClientHello allocates %v times", n)
		}
	}
	// The parser allocates only the Name string when it decides.
	p := &tlsParser{}
	n := testing.AllocsPerRun(100, func() {
		p.Reset()
		p.Feed(frag[:len(frag)/2])
		p.Feed(frag)
	})
	if n != 1 {
		t.Fatalf("tlsParser.Feed allocates %v times per flow, want 1 (the name)", n)
	}
}
