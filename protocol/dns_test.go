package protocol

import (
	"errors"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func dnsQuery(t testing.TB, id uint16, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestParseDNSQuery(t *testing.T) {
	good := dnsQuery(t, 0x1234, "WWW.Example.COM.", dnsmessage.TypeAAAA)
	resp := append([]byte{}, good...)
	resp[2] |= 0x80
	notify := append([]byte{}, good...)
	notify[2] |= 4 << 3
	noQ := append([]byte{}, good[:12]...)
	noQ[5] = 0
	// A question name that is a compression pointer back to the header.
	ptr := append(append([]byte{}, good[:12]...), 0xc0, 0x00, 0, 1, 0, 1)
	bin := append(append([]byte{}, good[:12]...), 3, 'a', 0, 'b', 0, 0, 1, 0, 1)
	tests := []struct {
		name string
		pkt  []byte
		qn   string
		err  error
	}{
		{"aaaa", good, "www.example.com", nil},
		{"root", dnsQuery(t, 1, ".", dnsmessage.TypeNS), "", nil},
		{"underscore", dnsQuery(t, 1, "_443._tcp.A.b.", dnsmessage.TypeSRV), "_443._tcp.a.b", nil},
		{"short", good[:11], "", ErrSyntax},
		{"response", resp, "", ErrNotQuery},
		{"notify", notify, "", ErrNotQuery},
		{"no question", noQ, "", ErrSyntax},
		{"truncated question", good[:len(good)-1], "", ErrSyntax},
		{"pointer loop", ptr, "", ErrSyntax},
		{"binary name", bin, "", ErrBadName},
	}
	buf := make([]byte, 0, 255)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := ParseDNSQuery(tt.pkt, buf)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("error %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(q.Name) != tt.qn || q.Class != dnsmessage.ClassINET {
				t.Fatalf("got %+v name %q, want %q", q, q.Name, tt.qn)
			}
		})
	}
	q, _ := ParseDNSQuery(good, buf)
	if q.ID != 0x1234 || q.Type != dnsmessage.TypeAAAA || !q.RecursionDesired {
		t.Fatalf("header fields %+v", q)
	}
}

func TestAppendDNSError(t *testing.T) {
	query := dnsQuery(t, 0xbeef, "a.example.", dnsmessage.TypeA)
	for _, rcode := range []dnsmessage.RCode{dnsmessage.RCodeRefused, dnsmessage.RCodeFormatError} {
		out, err := AppendDNSError([]byte{0xaa}, query, rcode)
		if err != nil {
			t.Fatal(err)
		}
		if out[0] != 0xaa {
			t.Fatal("dst prefix lost")
		}
		var m dnsmessage.Message
		if err := m.Unpack(out[1:]); err != nil {
			t.Fatal(err)
		}
		if m.ID != 0xbeef || !m.Response || m.RCode != rcode || !m.RecursionDesired || len(m.Questions) != 1 ||
			m.Questions[0].Name.String() != "a.example." || m.Questions[0].Type != dnsmessage.TypeA {
			t.Fatalf("response %+v", m)
		}
	}
	// Unparsable question: FORMERR without question.
	garbage := append(append([]byte{}, query[:12]...), 0xff, 0xff)
	out, err := AppendDNSError(nil, garbage, dnsmessage.RCodeFormatError)
	if err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(out); err != nil || m.ID != 0xbeef || m.RCode != dnsmessage.RCodeFormatError || len(m.Questions) != 0 {
		t.Fatalf("formerr %+v %v", m.Header, err)
	}
	if _, err := AppendDNSError(nil, query[:11], dnsmessage.RCodeFormatError); err == nil {
		t.Fatal("answered an 11-byte message")
	}
	resp := append([]byte{}, query...)
	resp[2] |= 0x80
	if _, err := AppendDNSError(nil, resp, dnsmessage.RCodeFormatError); !errors.Is(err, ErrNotQuery) {
		t.Fatalf("answered a response: %v", err)
	}
}

func tcpFrame(msg []byte) []byte { return append(u16(len(msg)), msg...) }

func TestDNSTCP(t *testing.T) {
	query := dnsQuery(t, 7, "Mail.Example.", dnsmessage.TypeMX)
	resp := append([]byte{}, query...)
	resp[2] |= 0x80
	tests := []struct {
		name   string
		stream []byte
		want   Verdict
		qn     string
		err    error
	}{
		{"query", tcpFrame(query), Decided, "mail.example", nil},
		{"two queries", append(tcpFrame(query), tcpFrame(query)...), Decided, "mail.example", nil},
		{"partial", tcpFrame(query)[:10], NeedMore, "", nil},
		{"short length", []byte{0, 11}, Malformed, "", ErrSyntax},
		{"too large", []byte{0x40, 0}, Malformed, "", ErrTooLarge},
		{"response", tcpFrame(resp), Malformed, "", ErrNotQuery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newP := mustNew("dns", Options{})
			p := newP()
			d := feedWhole(p, tt.stream).d
			if d.Verdict != tt.want || d.Name != tt.qn || d.Consume != 0 {
				t.Fatalf("got %v %q %d (%v), want %v %q", d.Verdict, d.Name, d.Consume, d.Err, tt.want, tt.qn)
			}
			if tt.err != nil && !errors.Is(d.Err, tt.err) {
				t.Fatalf("error %v, want %v", d.Err, tt.err)
			}
			if err := checkConsistent("dns", newP, tt.stream); err != nil {
				t.Fatal(err)
			}
			if tt.want != Decided {
				return
			}
			if p.Reply(OK) != nil {
				t.Fatal("reply for OK")
			}
			for o, rcode := range map[Outcome]dnsmessage.RCode{NotAllowed: dnsmessage.RCodeRefused, Timeout: dnsmessage.RCodeServerFailure, BadRequest: dnsmessage.RCodeFormatError} {
				r := p.Reply(o)
				var m dnsmessage.Message
				if len(r) < 2 || be16(r) != len(r)-2 || m.Unpack(r[2:]) != nil || m.RCode != rcode || m.ID != 7 {
					t.Fatalf("Reply(%v) = %x", o, r)
				}
			}
		})
	}
}

func TestDNSNoAllocs(t *testing.T) {
	query := dnsQuery(t, 7, "www.example.com.", dnsmessage.TypeA)
	buf := make([]byte, 0, 255)
	n := testing.AllocsPerRun(100, func() {
		q, err := ParseDNSQuery(query, buf)
		if err != nil || len(q.Name) != 15 {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("ParseDNSQuery allocates %v times", n)
	}
	out := make([]byte, 0, 512)
	n = testing.AllocsPerRun(100, func() {
		if _, err := AppendDNSError(out, query, dnsmessage.RCodeRefused); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("AppendDNSError allocates %v times", n)
	}
}
